/**
 * A value from the log, always as text: Preact escapes it, `<bdi>` keeps a
 * right-to-left override inside it from reordering what is around it, and
 * `short` cuts it for table cells (the record view shows it whole). Never
 * markup, never a link (docs/console.md, "Hostile data").
 */
export function Text({ value, short = false }: { value: unknown; short?: boolean }) {
  if (value === null || value === undefined) return <span class="none">—</span>;
  const text = typeof value === 'string' ? value : JSON.stringify(value, null, short ? undefined : 2);
  const shown = short && text.length > 120 ? `${text.slice(0, 120)}…` : text;
  return <bdi class={typeof value === 'string' ? 'value' : 'value json'}>{shown}</bdi>;
}
