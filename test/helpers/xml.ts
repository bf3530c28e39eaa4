// A strict parser for the XML the CLI writes (JUnit reports): it refuses what a conforming parser refuses, so a report that parses here is well-formed.
import assert from 'node:assert/strict';

export interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  /** The element's own text, references resolved. */
  text: string;
}

const NAME = /^[A-Za-z_][\w.-]*/;
/** Characters XML 1.0 allows (tab, LF, CR, and from U+0020 on, without lone surrogates, U+FFFE and U+FFFF). */
const XML_CHARS = /^(?:[\t\n\r\u0020-\ud7ff\ue000-\ufffd]|[\ud800-\udbff][\udc00-\udfff])*$/;

/** Parses a document: an optional `<?xml ...?>` declaration, one root element, white space around it. */
export function parseXml(text: string): XmlElement {
  assert.match(text, XML_CHARS, 'only characters XML 1.0 allows');
  let at = 0;
  const fail = (why: string): never => assert.fail(`${why} at ${at}: ${JSON.stringify(text.slice(at, at + 40))}`);
  const skipSpace = () => {
    while (at < text.length && /\s/.test(text[at]!)) at += 1;
  };
  const resolve = (raw: string): string => {
    if (/[<]/.test(raw)) fail('a raw < in text or an attribute');
    return raw.replace(/&([^;]*);?/g, (whole, ref: string) => {
      if (!whole.endsWith(';')) fail(`an unterminated reference &${ref}`);
      const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
      if (ref in named) return named[ref]!;
      const code = /^#x([0-9a-fA-F]+)$/.exec(ref)?.[1] ?? /^#([0-9]+)$/.exec(ref)?.[1];
      if (code === undefined) return fail(`an unknown reference &${ref};`);
      const char = String.fromCodePoint(ref.startsWith('#x') ? parseInt(code, 16) : Number(code));
      if (!XML_CHARS.test(char)) fail(`a reference to a character XML does not allow: &${ref};`);
      return char;
    });
  };
  const name = (): string => {
    const match = NAME.exec(text.slice(at));
    if (match === null) return fail('expected a name');
    at += match[0].length;
    return match[0];
  };
  const element = (): XmlElement => {
    if (text[at] !== '<') fail('expected <');
    at += 1;
    const el: XmlElement = { name: name(), attributes: {}, children: [], text: '' };
    for (;;) {
      skipSpace();
      if (text.startsWith('/>', at)) {
        at += 2;
        return el;
      }
      if (text[at] === '>') {
        at += 1;
        break;
      }
      const attribute = name();
      if (attribute in el.attributes) fail(`attribute ${attribute} twice`);
      skipSpace();
      if (text[at] !== '=') fail('expected =');
      at += 1;
      skipSpace();
      const quote = text[at];
      if (quote !== '"' && quote !== "'") return fail('expected a quoted value');
      const end = text.indexOf(quote, at + 1);
      if (end < 0) fail('an unterminated attribute value');
      el.attributes[attribute] = resolve(text.slice(at + 1, end));
      at = end + 1;
    }
    for (;;) {
      const next = text.indexOf('<', at);
      if (next < 0) fail(`element ${el.name} is not closed`);
      el.text += resolve(text.slice(at, next));
      at = next;
      if (text.startsWith('</', at)) {
        at += 2;
        if (name() !== el.name) fail(`the end tag does not match <${el.name}>`);
        skipSpace();
        if (text[at] !== '>') fail('expected >');
        at += 1;
        return el;
      }
      el.children.push(element());
    }
  };
  if (text.startsWith('<?xml')) {
    const end = text.indexOf('?>');
    if (end < 0) fail('an unterminated declaration');
    at = end + 2;
  }
  skipSpace();
  const root = element();
  skipSpace();
  if (at !== text.length) fail('content after the root element');
  return root;
}
