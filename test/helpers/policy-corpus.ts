/**
 * A generated, GitHub Actions-like policy directory of any size, shared by the
 * policy scale bench (bench/policies.ts, which describes its shape) and the
 * YAML front end's agreement tests.
 */

const EVENTS = ['pull_request_target', 'workflow_run', 'issue_comment', 'pull_request', 'schedule'];
const OWNERS = 50;

const pad = (i: number): string => String(i).padStart(5, '0');
const owner = (i: number): string => `org${i % OWNERS}`;
const ownerId = (i: number): string => String(100_000 + (i % OWNERS));

/** The i-th allow policy: 4 to 6 conditions, one glob, one regex, a jwt grant with templates. */
function allowPolicy(i: number): string {
  const repo = `${owner(i)}/svc-${i}`;
  const lines = [
    `# Deploy ${repo} from protected branches through the org's reviewed workflow.`,
    `name: deploy-${pad(i)}`,
    `description: Deploy ${repo} to production`,
    'issuer: github',
    'claims:',
    // Some operators write ids as numbers; they compare by string form.
    i % 3 === 0 ? `  repository_owner_id: ${ownerId(i)}` : `  repository_owner_id: "${ownerId(i)}"`,
  ];
  if (i % 2 === 0) lines.push(`  repository_id: "${5_000_000 + i}"`);
  lines.push(`  repository: ${repo}`);
  if (i % 4 !== 1) lines.push(i % 4 === 0 ? '  ref: [refs/heads/main, refs/heads/release]' : '  event_name: { in: [push, workflow_dispatch] }');
  lines.push(`  job_workflow_ref: { glob: "${owner(i)}/workflows/.github/workflows/deploy*.yml@refs/tags/v*" }`);
  lines.push(
    i % 2 === 0
      ? `  sub: { regex: "repo:${repo}:(ref:refs/heads/(main|release)|environment:prod(uction)?)" }`
      : '  ref: { regex: "refs/heads/(main|release/v[0-9]+)" }',
  );
  lines.push(
    'grant:',
    '  provider: jwt',
    `  audience: https://deploy-${i % 20}.example.com`,
    '  max_duration_seconds: 900',
    '  claims:',
    '    repository: ${repository}',
    '    run: ${run_id}',
    '    sha: ${sha}',
  );
  return `${lines.join('\n')}\n`;
}

/**
 * The j-th deny policy. Deny policies 0, 2, 4 and 6 are org-wide rules without
 * an equality condition (every decision evaluates them, however many policies
 * there are); the rest pin a value.
 */
function denyPolicy(j: number): string {
  const head = [`name: deny-${pad(j)}`, `description: Deny rule ${j}`, 'issuer: github', 'effect: deny', 'claims:'];
  const orgWide = [
    '  actor: { glob: "evil-bot-*" }',
    '  workflow_ref: { glob: "*/*/.github/workflows/untrusted-*.yml@**" }',
    '  /ref: { regex: "refs/heads/(tmp|wip)/.*" }',
    '  head_ref: { glob: "dependabot/**" }\n  event_name: { regex: "pull_request.*" }',
  ];
  if (j % 2 === 0 && j / 2 < orgWide.length) return `${[...head, orgWide[j / 2]].join('\n')}\n`;
  if (j === 1) {
    // Same repository as the decision's token, on an event it does not have: evaluated, does not match.
    return `${[...head, '  repository: org0/svc-0', '  event_name: pull_request_target'].join('\n')}\n`;
  }
  const body: string[] = [];
  switch (j % 10) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4:
      // A retired repository.
      body.push(`  repository: ${owner(j)}/legacy-${j}`);
      if (j % 3 === 0) body.push('  ref: { glob: "refs/heads/*" }');
      break;
    case 5:
    case 6:
      // An owner that must never get credentials, written as a number or a string.
      body.push(j % 2 === 0 ? `  repository_owner_id: ${900_000 + j}` : `  repository_owner_id: "${900_000 + j}"`);
      break;
    case 7:
      body.push(`  event_name: ${EVENTS[j % EVENTS.length]}`, `  repository_owner_id: "${ownerId(j + 7)}"`, `  repository: { glob: "${owner(j + 7)}/sandbox-*" }`);
      break;
    case 8:
      body.push(`  actor: [former-employee-${j}, contractor-${j}, bot-${j}]`);
      break;
    default:
      body.push(`  /environment: staging-${j}`, `  repository_owner_id: "${ownerId(j)}"`);
  }
  return `${[...head, ...body].join('\n')}\n`;
}

/** N files: ~10% deny policies, the rest allow policies; allow policy 0 is the one the decision names. */
export function generate(n: number): { name: string; text: string }[] {
  const denies = Math.round(n * 0.1);
  const files: { name: string; text: string }[] = [];
  for (let i = 0; i < n - denies; i++) files.push({ name: `deploy-${pad(i)}.yaml`, text: allowPolicy(i) });
  for (let j = 0; j < denies; j++) files.push({ name: `deny-${pad(j)}.yaml`, text: denyPolicy(j) });
  return files;
}
