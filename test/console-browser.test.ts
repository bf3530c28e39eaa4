// The web console in a real browser (docs/console.md): Debian's Chromium,
// driven by playwright-core, against a real broker on loopback with records
// made by real exchanges. Set UPDATE_CONSOLE_SCREENSHOTS=1 to rewrite the
// screenshots in docs/console/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { BrowserContext, Page } from 'playwright-core';
import type { AuditRecord } from '../src/audit/types.js';
import { listen, type RunningServer } from '../src/http/server.js';
import { AUDIENCE, AUDITOR_TOKEN, createCapturingLogger, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { assertConsoleTestable, launchConsoleBrowser, type ConsoleBrowser } from './helpers/console-browser.js';
import { localJwtPolicy } from './helpers/oidc.js';

const MAIN = 'repo:acme/api:ref:refs/heads/main';
const OTHER = 'repo:acme/other:ref:refs/heads/main';
/** The hostile-claims corpus: markup, a script URL, a right-to-left override, a 10 kB string. */
const HOSTILE = {
  markup: '<img src=x onerror="alert(document.cookie)">',
  url: 'javascript:alert(1)',
  rtl: 'abc\u202Egpj.exe',
  big: `${'A'.repeat(10_239)}Z`,
};
const ISSUED = 12;
const DENIED_OTHER = 5;
const DENIED_WEB = 3;

const stops: (() => Promise<unknown>)[] = [];
let fx: BrokerFixture;
let server: RunningServer;
let browser: ConsoleBrowser;
let context: BrowserContext;
let page: Page;
let dialogs: string[];

before(async () => {
  assertConsoleTestable();
  fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') } });
  stops.push(() => fx.close());
  server = await listen(fx.broker, { host: '127.0.0.1', port: 0, logger: createCapturingLogger().logger });
  stops.push(() => server.shutdown());

  const exchange = async (claims: Record<string, unknown>, status: number) => {
    const token = await fx.issuer.mint({ aud: AUDIENCE, sub: MAIN, repository: 'acme/api', ...claims });
    const res = await fetch(`${server.url}/v1/exchange`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ policy: 'deploy' }) });
    assert.equal(res.status, status, await res.text());
  };
  await exchange({ sub: HOSTILE.markup, ...HOSTILE, [HOSTILE.markup]: 'a claim named with markup' }, 200);
  for (let i = 0; i < ISSUED; i += 1) await exchange({ run_number: i }, 200);
  for (let i = 0; i < DENIED_OTHER; i += 1) await exchange({ sub: OTHER, repository: 'acme/other', run_number: i }, 403);
  for (let i = 0; i < DENIED_WEB; i += 1) await exchange({ sub: 'repo:acme/web:ref:refs/heads/main', repository: 'acme/web' }, 403);

  browser = await launchConsoleBrowser();
  stops.push(() => browser.close());
  ({ context, page, dialogs } = browser);
});

after(async () => {
  for (const stop of stops.reverse()) await stop();
});

/** Every record, in chain order, through the API with the Bearer token (what the console must show). */
async function records(query = ''): Promise<AuditRecord[]> {
  const res = await fetch(`${server.url}/v1/audit/events?limit=1000${query}`, { headers: { authorization: `Bearer ${AUDITOR_TOKEN}` } });
  return ((await res.json()) as { events: AuditRecord[] }).events;
}

const screenshot = (name: string) => browser.screenshot(name);

/** The seq column of the table shown now. */
async function shownSeqs(): Promise<number[]> {
  return (await page.locator('table.records tbody tr td:first-child').allTextContents()).map(Number);
}

test('sign-in refuses a wrong token and lets the right one in, by keyboard alone', async () => {
  await page.goto(`${server.url}/console/`);
  const token = page.getByLabel('Auditor token');
  await token.waitFor();
  await screenshot('sign-in');
  await token.fill('not-the-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  assert.equal(await page.getByRole('alert').textContent(), 'This token is not an auditor token.');
  // The field has the focus back: clear it, type the token and press Enter.
  assert.equal(await page.evaluate('document.activeElement.id'), 'token');
  await page.keyboard.press('Control+A');
  await page.keyboard.type(AUDITOR_TOKEN);
  await page.keyboard.press('Enter');
  await page.getByText('Signed in as secops').waitFor();
  const cookies = await context.cookies();
  assert.deepEqual(
    cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure, path: c.path })),
    [{ name: 'oidc-broker-console', httpOnly: true, sameSite: 'Strict', secure: false, path: '/' }],
  );
  assert.ok(!cookies[0]!.value.includes(AUDITOR_TOKEN));
  // Page script cannot read an HttpOnly cookie.
  assert.equal(await page.evaluate('document.cookie'), '');
});

test('the log shows the records in chain order, with a green chain badge', async () => {
  const all = await records();
  assert.equal(all.length, 1 + ISSUED + DENIED_OTHER + DENIED_WEB);
  await page.locator('[data-chain="ok"]').waitFor();
  assert.equal(await page.locator('[data-chain]').textContent(), `Chain intact: ${all.length} records`);
  await page.locator('table.records tbody tr').first().waitFor();
  assert.deepEqual(await shownSeqs(), all.slice(0, 50).map((r) => r.seq));
  await screenshot('log');
});

test('filtering by decision and subject puts the filters in the URL, and back restores the view', async () => {
  await page.getByLabel('Decision').selectOption('denied');
  await page.getByLabel('Subject').fill(OTHER);
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForURL((url) => url.searchParams.get('decision') === 'denied');
  const url = new URL(page.url());
  assert.equal(url.searchParams.get('subject'), OTHER);
  await page.locator('table.records caption', { hasText: `${DENIED_OTHER} records` }).waitFor();
  const expected = await records(`&decision=denied&subject=${encodeURIComponent(OTHER)}`);
  assert.equal(expected.length, DENIED_OTHER);
  assert.deepEqual(await shownSeqs(), expected.map((r) => r.seq));
  assert.deepEqual(await page.locator('table.records tbody tr').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-decision'))), Array(DENIED_OTHER).fill('denied'));
  await screenshot('log-filtered');

  // A time range, typed as UTC, goes to the API as RFC 3339.
  const last = expected.at(-1)!;
  await page.getByLabel('Since (UTC)').fill(last.time.slice(0, 19));
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForURL((u) => u.searchParams.get('since') === `${last.time.slice(0, 19)}Z`);
  const since = await records(`&decision=denied&subject=${encodeURIComponent(OTHER)}&since=${last.time.slice(0, 19)}Z`);
  await page.locator('table.records caption', { hasText: `${since.length} records` }).waitFor();
  assert.deepEqual(await shownSeqs(), since.map((r) => r.seq));
  await page.getByLabel('Since (UTC)').fill('');

  // A claim filter, added through the form.
  await page.getByRole('button', { name: 'Add a claim filter' }).click();
  await page.getByLabel('Claim name').fill('run_number');
  await page.getByLabel('Value', { exact: true }).fill('2');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForURL((u) => u.searchParams.get('claim.run_number') === '2' && !u.searchParams.has('since'));
  await page.locator('table.records caption', { hasText: '1 records' }).waitFor();

  await page.goBack();
  await page.waitForURL((u) => u.searchParams.get('claim.run_number') === null && u.searchParams.has('since'));
  await page.goBack();
  await page.waitForURL((u) => !u.searchParams.has('since') && u.searchParams.get('decision') === 'denied');
  await page.locator('table.records caption', { hasText: `${DENIED_OTHER} records` }).waitFor();
  assert.equal(await page.getByLabel('Subject').inputValue(), OTHER, 'the form follows the URL');

  // The same URL in a new tab is the same view: links can be shared.
  const shared = await context.newPage();
  await shared.goto(url.toString());
  await shared.locator('table.records caption', { hasText: `${DENIED_OTHER} records` }).waitFor();
  await shared.close();
});

test('paging walks forward with Next and back with Previous', async () => {
  await page.goto(`${server.url}/console/?limit=10`);
  const all = await records();
  await page.locator('table.records tbody tr').first().waitFor();
  assert.deepEqual(await shownSeqs(), all.slice(0, 10).map((r) => r.seq));
  await page.getByRole('button', { name: 'Next' }).click();
  await page.waitForURL((u) => u.searchParams.has('cursor'));
  await page.locator('table.records tbody tr td:first-child', { hasText: String(all[10]!.seq) }).first().waitFor();
  assert.deepEqual(await shownSeqs(), all.slice(10, 20).map((r) => r.seq));
  await page.getByRole('button', { name: 'Next' }).click();
  await page.locator('table.records caption', { hasText: `${all.length - 20} records` }).waitFor();
  assert.deepEqual(await shownSeqs(), all.slice(20).map((r) => r.seq));
  assert.equal(await page.getByRole('button', { name: 'Next' }).isDisabled(), true, 'no page after the last');
  await page.getByRole('button', { name: 'Previous' }).click();
  await page.locator('table.records caption', { hasText: '10 records' }).waitFor();
  assert.deepEqual(await shownSeqs(), all.slice(10, 20).map((r) => r.seq));
  await page.getByRole('button', { name: 'Previous' }).click();
  await page.waitForURL((u) => !u.searchParams.has('cursor'));
  assert.equal(await page.getByRole('button', { name: 'Previous' }).isDisabled(), true);
});

test('a record shows every field, its claims, the policy hash and its chain link', async () => {
  const record = (await records()).find((r) => r.decision === 'issued' && r.claims?.run_number === 3)!;
  await page.goto(`${server.url}/console/?limit=50`);
  await page.getByRole('link', { name: `Open record ${record.seq}`, exact: true }).click();
  await page.getByRole('heading', { name: `Record ${record.seq} issued` }).waitFor();
  assert.ok(new URL(page.url()).searchParams.get('record') === record.id);
  const fields = Object.fromEntries(
    await page.locator('dl.fields:not(.chain) > div').evaluateAll((divs) => divs.map((d) => [d.querySelector('dt')!.textContent, d.querySelector('dd')!.textContent])),
  ) as Record<string, string>;
  for (const name of ['id', 'time', 'decision', 'request_id', 'issuer', 'subject', 'policy', 'provider', 'target', 'credential_id', 'expires_at', 'token_sha256', 'jti']) {
    assert.equal(fields[name], String((record as unknown as Record<string, unknown>)[name]), name);
  }
  assert.equal(await page.locator('table.claims-table tr', { hasText: 'repository' }).locator('td').textContent(), 'acme/api');
  const chain = await page.locator('dl.chain dd').allTextContents();
  assert.deepEqual(chain, [record.policy_sha256, String(record.seq), record.prev_hash, record.hash]);
  await screenshot('record');
  await page.getByRole('button', { name: '← Back to the log' }).click();
  await page.waitForURL((u) => !u.searchParams.has('record'));
});

test('the CSV export downloads every record of the current filter, through the session cookie', async () => {
  await page.goto(`${server.url}/console/?decision=denied&limit=2`);
  await page.locator('table.records tbody tr').first().waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'CSV' }).click()]);
  assert.match(download.suggestedFilename(), /^audit-\d{8}T\d{6}Z\.csv$/);
  const csv = await readFile(await download.path(), 'utf8');
  const lines = csv.split('\r\n');
  assert.match(lines[0]!, /^seq,id,time,decision,/);
  const denied = await records('&decision=denied');
  assert.equal(denied.length, DENIED_OTHER + DENIED_WEB);
  assert.deepEqual(
    lines.slice(1, -1).map((line) => Number(line.split(',')[0])),
    denied.map((r) => r.seq),
    'every match, not just the page shown',
  );
  assert.equal(lines.at(-1), '');
});

test('hostile claim values render as inert text', async () => {
  const hostile = (await records()).find((r) => r.subject === HOSTILE.markup)!;
  await page.goto(`${server.url}/console/?limit=50`);
  await page.locator('table.records tbody tr').first().waitFor();
  assert.equal(await page.locator('table.records tbody tr').first().locator('td').nth(4).textContent(), HOSTILE.markup);
  await page.getByRole('link', { name: `Open record ${hostile.seq}`, exact: true }).click();
  await page.getByRole('heading', { name: `Record ${hostile.seq} issued` }).waitFor();
  const cell = (name: string) => page.locator('table.claims-table tr').filter({ has: page.locator('th', { hasText: new RegExp(`^${name}$`) }) }).locator('td');
  assert.equal(await cell('markup').textContent(), HOSTILE.markup);
  assert.equal(await cell('url').textContent(), HOSTILE.url);
  // A right-to-left override is shown by its code point, not obeyed: abc\u202Egpj.exe must not read as abcexe.jpg.
  assert.equal(await cell('rtl').textContent(), 'abcU+202Egpj.exe');
  assert.equal(await cell('rtl').locator('.control').textContent(), 'U+202E');
  assert.equal(await cell('big').textContent(), HOSTILE.big);
  assert.equal(await page.locator('table.claims-table th', { hasText: HOSTILE.markup }).count(), 1, 'a claim name with markup is text too');
  assert.equal(await page.locator('img').count(), 0, 'no element was made from a value');
  assert.equal(await page.locator('a[href^="javascript:"], [onerror]').count(), 0);
  assert.equal(await cell('rtl').locator('bdi').count(), 1, 'each value is isolated in its own <bdi>');
  await page.locator('table.claims-table').scrollIntoViewIfNeeded();
  await screenshot('record-hostile');
  assert.deepEqual(dialogs, [], 'no script ran');
});

test('a record opens from the keyboard, and dark mode follows the system', async () => {
  await page.goto(`${server.url}/console/?decision=denied`);
  await page.locator('table.records tbody tr').first().waitFor();
  const first = (await records('&decision=denied'))[0]!;
  let focused = '';
  for (let i = 0; i < 40 && focused !== `Open record ${first.seq}`; i += 1) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate<string>("document.activeElement.getAttribute('aria-label') ?? ''");
  }
  assert.equal(focused, `Open record ${first.seq}`, 'Tab reaches the first record');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: `Record ${first.seq} denied` }).waitFor();

  const background = () => page.evaluate<string>('getComputedStyle(document.body).backgroundColor');
  assert.equal(await background(), 'rgb(255, 255, 255)');
  await page.emulateMedia({ colorScheme: 'dark' });
  assert.equal(await background(), 'rgb(13, 17, 23)');
  await page.goBack();
  await page.locator('table.records tbody tr').first().waitFor();
  await screenshot('log-dark');
  await page.emulateMedia({ colorScheme: 'light' });
});

test('a narrow window shows the log without a page-wide horizontal scroll', async () => {
  await page.setViewportSize({ width: 390, height: 800 });
  await page.goto(`${server.url}/console/?decision=denied`);
  await page.locator('table.records tbody tr').first().waitFor();
  assert.ok((await page.evaluate<number>('document.documentElement.scrollWidth')) <= 390);
  await screenshot('log-narrow');
  await page.setViewportSize({ width: 1280, height: 800 });
});

test('the chain badge turns red after the database is tampered with', async () => {
  const db = new Database(path.join(fx.dir, 'data', 'audit.db'));
  try {
    db.prepare('UPDATE audit_events SET reason = ? WHERE seq = 3').run('nothing to see here');
  } finally {
    db.close();
  }
  await page.goto(`${server.url}/console/`);
  await page.locator('[data-chain="broken"]').waitFor();
  assert.equal(await page.locator('[data-chain]').textContent(), 'Chain broken at seq 3: hash_mismatch (2 records verified before it)');
  await screenshot('chain-broken');
});

test('sign-out ends the session in the browser', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Auditor token').waitFor();
  assert.deepEqual(await context.cookies(), []);
  await page.goto(`${server.url}/console/?decision=denied`);
  await page.getByLabel('Auditor token').waitFor();
  assert.deepEqual(dialogs, []);
});
