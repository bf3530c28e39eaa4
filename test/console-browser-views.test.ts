// The console's dashboard (and, below, the policy playground) in a real
// browser (docs/console.md): Debian's Chromium against a real broker whose
// records come from real exchanges. UPDATE_CONSOLE_SCREENSHOTS=1 rewrites the
// screenshots in docs/console/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Page } from 'playwright-core';
import type { AuditStats } from '../src/audit/types.js';
import { listen, type RunningServer } from '../src/http/server.js';
import { AUDIENCE, AUDITOR_TOKEN, createCapturingLogger, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { assertConsoleTestable, launchConsoleBrowser, type ConsoleBrowser } from './helpers/console-browser.js';
import { localJwtPolicy } from './helpers/oidc.js';

const MAIN = 'repo:acme/api:ref:refs/heads/main';
const OTHER = 'repo:acme/other:ref:refs/heads/main';
const MARKUP = '<img src=x onerror="alert(document.cookie)">';
const [ISSUED, DENIED_OTHER] = [7, 4];
const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
  'no-prt.yaml': 'issuer: local\neffect: deny\nclaims:\n  event_name: pull_request_target\n',
  // A guardrail rolled out in audit mode: it records the acme/other requests and refuses nothing.
  'watch-other.yaml': 'issuer: local\neffect: deny\nmode: audit\nclaims:\n  repository: acme/other\n',
  'deploy.test.yaml': `tests:
  - name: acme/api deploys
    policy: deploy
    claims: {repository: acme/api}
    expect: allow
  - name: acme/web deploys too (wrong on purpose)
    policy: deploy
    claims: {repository: acme/web}
    expect: allow
`,
};

const stops: (() => Promise<unknown>)[] = [];
let fx: BrokerFixture;
let server: RunningServer;
let browser: ConsoleBrowser;
let page: Page;

before(async () => {
  assertConsoleTestable();
  fx = await startBrokerFixture({ policies: POLICIES });
  stops.push(() => fx.close());
  server = await listen(fx.broker, { host: '127.0.0.1', port: 0, logger: createCapturingLogger().logger });
  stops.push(() => server.shutdown());
  const exchange = async (claims: Record<string, unknown>, status: number) => {
    const token = await fx.issuer.mint({ aud: AUDIENCE, sub: MAIN, repository: 'acme/api', ...claims });
    const res = await fetch(`${server.url}/v1/exchange`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ policy: 'deploy' }) });
    assert.equal(res.status, status, await res.text());
  };
  for (let i = 0; i < ISSUED; i += 1) await exchange({ run_number: i }, 200);
  for (let i = 0; i < DENIED_OTHER; i += 1) await exchange({ sub: OTHER, repository: 'acme/other' }, 403);
  await exchange({ sub: MARKUP, repository: 'javascript:alert(1)' }, 403);
  browser = await launchConsoleBrowser();
  stops.push(() => browser.close());
  page = browser.page;
});

after(async () => {
  for (const stop of stops.reverse()) await stop();
});

/** The text of each cell of each body row of a table. */
async function rows(selector: string): Promise<string[][]> {
  return page.locator(`${selector} tbody tr`).evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent ?? '')));
}

test('the dashboard shows the counts by decision and policy and the top lists of the last 24 hours, each linking into the log', async () => {
  await page.goto(`${server.url}/console/?view=dashboard`);
  await page.getByLabel('Auditor token').fill(AUDITOR_TOKEN);
  await page.keyboard.press('Enter');
  await page.locator('#top-subjects-list tbody tr').first().waitFor();

  const res = await fetch(`${server.url}/v1/audit/stats`, { headers: { authorization: `Bearer ${AUDITOR_TOKEN}` } });
  const stats = (await res.json()) as AuditStats;
  assert.equal(stats.total, ISSUED + DENIED_OTHER + 1);
  // The reason names the claim value that failed, so each repository is a reason of its own.
  const reason = (value: string) => `conditions_not_met: Policy 'deploy' does not match this token: claim 'repository' is ${JSON.stringify(value)}.`;
  assert.deepEqual(stats.top_denial_reasons, [
    { error: 'access_denied', reason: reason('acme/other'), count: DENIED_OTHER },
    { error: 'access_denied', reason: reason('javascript:alert(1)'), count: 1 },
  ]);

  assert.deepEqual(await page.locator('#by-decision .legend li').allTextContents(), [`issued ${ISSUED}`, `denied ${DENIED_OTHER + 1}`, 'error 0', 'explain 0']);
  assert.deepEqual(await page.locator('#by-policy .legend li').allTextContents(), [`deploy ${ISSUED + DENIED_OTHER + 1}`]);
  // Every record falls in the current hour, so one stacked bar per chart, with a title per segment.
  assert.deepEqual(
    await page.locator('#by-decision svg rect title').allTextContents(),
    [`${stats.buckets.at(-1)!.slice(0, 16).replace('T', ' ')}: ${ISSUED} issued`, `${stats.buckets.at(-1)!.slice(0, 16).replace('T', ' ')}: ${DENIED_OTHER + 1} denied`],
  );
  assert.deepEqual(await rows('#top-denial-reasons'), [
    ['access_denied', reason('acme/other'), String(DENIED_OTHER)],
    ['access_denied', reason('javascript:alert(1)'), '1'],
  ]);
  assert.deepEqual(await rows('#top-subjects-list'), [
    [MAIN, String(ISSUED), '0'],
    [OTHER, String(DENIED_OTHER), String(DENIED_OTHER)],
    [MARKUP, '1', '1'],
  ]);
  // The hostile subject is text: no image element, no dialog.
  assert.equal(await page.locator('img').count(), 0);
  assert.deepEqual(browser.dialogs, []);
  await page.locator('.window').evaluate((element) => element.scrollIntoView());
  await browser.screenshot('dashboard');

  await page.getByRole('link', { name: `Show the ${DENIED_OTHER} denials of this subject in the log` }).click();
  await page.waitForURL((url) => url.searchParams.get('subject') === OTHER);
  const url = new URL(page.url());
  assert.deepEqual([url.searchParams.get('decision'), url.searchParams.get('view')], ['denied', null]);
  await page.locator('table.records caption', { hasText: `${DENIED_OTHER} records` }).waitFor();
});

test('a filter and a day bucket change the pictures; a window too wide shows the broker\'s sentence', async () => {
  await page.getByRole('link', { name: 'Dashboard' }).click();
  await page.locator('#top-subjects-list tbody tr', { hasText: OTHER }).waitFor();
  // The log's filters (subject and decision) came along.
  assert.deepEqual(await rows('#top-subjects-list'), [[OTHER, String(DENIED_OTHER), String(DENIED_OTHER)]]);
  await page.getByLabel('Bars per').selectOption('day');
  await page.waitForURL((url) => url.searchParams.get('bucket') === 'day');
  await page.locator('.window', { hasText: 'the last 30 days' }).waitFor();
  assert.equal(await page.locator('#by-decision svg rect').count(), 1);

  await page.getByLabel('Since (UTC)').fill('2020-01-01T00:00:00');
  await page.getByLabel('Until (UTC)').fill('2026-01-01T00:00:00');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  assert.equal(await page.getByRole('alert').textContent(), "The window from 'since' to 'until' spans 2192 day buckets; at most 1000 are allowed.");
});

test('the playground decides a pasted claim set condition by condition, hostile values inert', async () => {
  await page.getByRole('link', { name: 'Playground' }).click();
  // The loaded allow policies are suggested.
  await page.locator('#p-policies option').first().waitFor({ state: 'attached' });
  assert.deepEqual(await page.locator('#p-policies option').evaluateAll((options) => options.map((o) => o.getAttribute('value'))), ['deploy']);
  await page.getByLabel('Policy', { exact: true }).fill('deploy');
  const input = page.getByLabel('Claim set (JSON)', { exact: true });
  await input.fill('{"repository": "acme/api", "event_name": ');
  await page.getByRole('button', { name: 'Evaluate' }).click();
  assert.match((await page.getByRole('alert').textContent()) ?? '', /^The claim set is not JSON: /);

  const claims = { aud: AUDIENCE, repository: 'acme/api', event_name: MARKUP, note: 'abc\u202Egpj.exe' };
  await input.fill(JSON.stringify(claims, null, 2));
  await page.getByRole('button', { name: 'Evaluate' }).click();
  await page.locator('#verdict').waitFor();
  assert.equal(await page.locator('#verdict').textContent(), "allow (allowed): Policy 'deploy' allows this token.");
  assert.deepEqual(await rows('table[data-policy="deploy"]'), [['✓ yes', 'repository', 'equals', 'acme/api', 'acme/api']]);
  assert.deepEqual(await rows('table[data-policy="no-prt"]'), [['✗ no', 'event_name', 'equals', 'pull_request_target', MARKUP]]);
  assert.equal(await page.locator('img').count(), 0);
  assert.deepEqual(browser.dialogs, []);
  await page.getByRole('button', { name: 'Evaluate' }).evaluate((element) => element.scrollIntoView());
  await browser.screenshot('playground');

  await input.fill(JSON.stringify({ ...claims, event_name: 'pull_request_target' }));
  await page.getByRole('button', { name: 'Evaluate' }).click();
  await page.locator('#verdict', { hasText: 'deny' }).waitFor();
  assert.equal(await page.locator('#verdict').textContent(), "deny (denied_by_policy): Denied by deny policy 'no-prt'.");
  assert.deepEqual(await rows('table[data-policy="no-prt"]'), [['✓ yes', 'event_name', 'equals', 'pull_request_target', 'pull_request_target']]);
});

test('the playground verifies a pasted token and keeps it out of the URL and of storage', async () => {
  const token = await fx.issuer.mint({ aud: AUDIENCE, sub: OTHER, repository: 'acme/other' });
  await page.getByLabel('a token', { exact: true }).check();
  await page.getByLabel('Token (compact JWT)', { exact: true }).fill(token);
  await page.getByRole('button', { name: 'Evaluate' }).click();
  await page.locator('#verdict', { hasText: 'conditions_not_met' }).waitFor();
  assert.deepEqual(await rows('table[data-policy="deploy"]'), [['✗ no', 'repository', 'equals', 'acme/api', 'acme/other']]);
  assert.ok(!page.url().includes(token.slice(0, 20)));
  assert.equal(await page.evaluate('localStorage.length + sessionStorage.length'), 0);

  // The audit-mode guardrail matches acme/other: shown as what it would do, not as a denial.
  assert.equal(
    await page.locator('table[data-policy="watch-other"] caption').textContent(),
    'watch-other (deny policy): would deny (audit mode: recorded, not denied)',
  );

  await page.getByLabel('Token (compact JWT)', { exact: true }).fill(`${token.slice(0, -4)}AAAA`);
  await page.getByRole('button', { name: 'Evaluate' }).click();
  assert.match((await page.getByRole('alert').textContent()) ?? '', /^The token does not verify: /);
});

test('the policy view lists the loaded set with its test status, and a policy shows its source and a failing case as failing', async () => {
  await page.getByRole('link', { name: 'Policies' }).click();
  await page.locator('table.policy-list tbody tr').first().waitFor();
  const sha = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 12);
  assert.deepEqual(await rows('table.policy-list'), [
    ['deploy', 'allow', 'local', 'deploy.yaml', sha(POLICIES['deploy.yaml']), '1 of 2 fail'],
    ['no-prt', 'deny', 'local', 'no-prt.yaml', sha(POLICIES['no-prt.yaml']), 'none'],
    ['watch-other', 'deny audit mode', 'local', 'watch-other.yaml', sha(POLICIES['watch-other.yaml']), 'none'],
  ]);
  assert.equal(await page.locator('table.policy-list caption').textContent(), '1 of 2 test cases pass (1 test file)');
  const failing = await rows('table.tests');
  assert.deepEqual(failing.map((r) => r.slice(0, 4)), [['✗ FAIL', 'deploy.test.yaml:6: acme/web deploys too (wrong on purpose)', 'allow', 'deny']]);
  assert.match(failing[0]![4]!, /^Policy 'deploy' does not match this token: claim 'repository' is "acme\/web"/);
  await browser.screenshot('policies');

  await page.getByRole('link', { name: 'deploy', exact: true }).click();
  await page.waitForURL((url) => url.searchParams.get('open') === 'deploy' && url.searchParams.get('view') === 'policies');
  await page.locator('pre.source').waitFor();
  assert.equal(await page.locator('pre.source').textContent(), POLICIES['deploy.yaml']);
  assert.deepEqual((await rows('table.tests')).map((r) => [r[0], r[1]]), [
    ['✓ pass', 'deploy.test.yaml:2: acme/api deploys'],
    ['✗ FAIL', 'deploy.test.yaml:6: acme/web deploys too (wrong on purpose)'],
  ]);
  await browser.screenshot('policy');
  await page.goBack();
  await page.locator('table.policy-list').waitFor();
});

test('the log filters on an audit-mode match: the records the guardrail would have denied', async () => {
  await page.goto(`${server.url}/console/`);
  await page.getByLabel('Audit-mode match (policy)').fill('watch-other');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForURL((url) => url.searchParams.get('audit_match') === 'watch-other');
  await page.locator('table.records caption', { hasText: `${DENIED_OTHER} records` }).waitFor();
  assert.deepEqual(await page.locator('table.records tbody tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-decision'))), Array(DENIED_OTHER).fill('denied'));
});

test('on a narrow window the dashboard, the policies and the playground have no page-wide horizontal scroll', async () => {
  await page.setViewportSize({ width: 390, height: 800 });
  try {
    for (const [view, ready] of [
      ['dashboard', '#top-subjects-list tbody tr'],
      ['policies', 'table.policy-list tbody tr'],
      ['playground', '#p-input'],
    ] as const) {
      await page.goto(`${server.url}/console/?view=${view}`);
      await page.locator(ready).first().waitFor();
      assert.ok((await page.evaluate<number>('document.documentElement.scrollWidth')) <= 390, view);
    }
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});
