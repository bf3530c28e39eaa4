// Grant templates (docs/policies/reference.md: "strings may use ${claim} templates").
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileTemplate } from '../src/claims/template.js';
import { TemplateError } from '../src/claims/template.js';

const CLAIMS = {
  repository: 'acme/api',
  run_id: 1234567890,
  ref_protected: true,
  'a/b': 'slash',
  nested: { list: ['zero', 'one'] },
  secret_looking: '${repository}',
  dollar: '$$',
  empty: '',
  nothing: null,
  obj: { a: 1 },
  arr: [1],
};

describe('render inserts each claim\'s string form, literally', () => {
  const rows: [source: string, rendered: string][] = [
    ['https://deploy.example.com', 'https://deploy.example.com'],
    ['${repository}', 'acme/api'],
    ['repo:${repository}:run:${run_id}', 'repo:acme/api:run:1234567890'],
    ['${ref_protected}', 'true'],
    ['${empty}', ''],
    ['${/nested/list/1}', 'one'],
    ['${/a~1b}', 'slash'],
    ['${/repository}', 'acme/api'],
    ['cost: $$5', 'cost: $5'],
    ['$${repository}', '${repository}'],
    ['$$${repository}', '$acme/api'],
    ['$$$${repository}', '$${repository}'],
    ['a $ b', 'a $ b'],
    ['trailing $', 'trailing $'],
    ['{repository}', '{repository}'],
    // A claim value holding template syntax stays literal: it is never expanded again.
    ['${secret_looking}', '${repository}'],
    ['${dollar}', '$$'],
  ];
  for (const [source, rendered] of rows) {
    test(`${source} -> ${rendered}`, () => {
      const template = compileTemplate(source);
      assert.equal(template.source, source);
      assert.equal(template.render(CLAIMS), rendered);
    });
  }
});

describe('a missing, null, object or array claim cannot be rendered', () => {
  const rows: [source: string, claim: string, message: RegExp][] = [
    ['${missing}', 'missing', /claim 'missing' is absent/],
    ['x-${nothing}', 'nothing', /claim 'nothing' is null/],
    ['${obj}', 'obj', /claim 'obj' is an object/],
    ['${arr}', 'arr', /claim 'arr' is an array/],
    ['${/nested/list/2}', '/nested/list/2', /is absent/],
    ['${constructor}', 'constructor', /is absent/],
  ];
  for (const [source, claim, message] of rows) {
    test(source, () => {
      assert.throws(
        () => compileTemplate(source).render(CLAIMS),
        (err: unknown) => err instanceof TemplateError && err.claim === claim && message.test(err.message),
      );
    });
  }
});

describe('a malformed template fails to compile', () => {
  const rows: [source: string, message: RegExp][] = [
    ['${repository', /unterminated '\$\{' at character 1/],
    ['abc ${', /unterminated '\$\{' at character 5/],
    ['${}', /empty claim name/],
    ['${a b}', /invalid claim name 'a b'/],
    ['${${x}}', /invalid claim name/],
    ['${/a~2b}', /'~' must be followed by 0 or 1/],
  ];
  for (const [source, message] of rows) {
    test(source, () => assert.throws(() => compileTemplate(source), { name: 'TemplateSyntaxError', message }));
  }
});

test('a compiled template is immutable', () => {
  const template = compileTemplate('${repository}');
  assert.ok(Object.isFrozen(template));
});

test('a compiled template lists its own text and its claim references, for load-time checks of what every rendering holds', () => {
  const template = compileTemplate('gh-${repository}-$$${/a~1b}.x');
  assert.deepEqual(template.literals, ['gh-', '-$', '.x']);
  assert.deepEqual(template.claimRefs, ['repository', '/a~1b']);
  assert.deepEqual(compileTemplate('plain').claimRefs, []);
  assert.deepEqual(compileTemplate('${a}${b}').literals, []);
});
