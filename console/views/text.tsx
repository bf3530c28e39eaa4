/** Characters that reorder or hide text: bidi embeddings, overrides and isolates, directional marks, zero-width ones. */
const CONTROLS = /([\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff])/;

/**
 * A value from the log, always as text: Preact escapes it, `<bdi>` keeps its
 * direction from reordering what is around it, and every character that
 * reorders or hides text is shown as its code point (`U+202E`) instead of
 * acting, so `abc\u202Egpj.exe` cannot pass for `abcexe.jpg`. `short` cuts it
 * for table cells (the record view shows it whole). Never markup, never a
 * link (docs/console.md, "Security model").
 */
export function Text({ value, short = false }: { value: unknown; short?: boolean }) {
  if (value === null || value === undefined) return <span class="none">—</span>;
  const text = typeof value === 'string' ? value : JSON.stringify(value, null, short ? undefined : 2);
  const shown = short && text.length > 120 ? `${text.slice(0, 120)}…` : text;
  return (
    <bdi class={typeof value === 'string' ? 'value' : 'value json'}>
      {shown.split(CONTROLS).map((part, i) =>
        i % 2 === 1 ? (
          <span class="control" title="an invisible control character, shown by its code point">
            {`U+${part.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`}
          </span>
        ) : (
          part
        ),
      )}
    </bdi>
  );
}
