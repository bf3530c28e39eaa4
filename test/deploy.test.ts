// Deployment artifacts (docs/operations.md): the Dockerfile and .dockerignore,
// scripts/healthcheck.js, the Kubernetes manifests in deploy/kubernetes/, the
// Compose file deploy/compose.yaml and the alert rules in deploy/prometheus/.
// No container engine or cluster runs here, so the files are parsed and checked
// against the broker's real config loader, policy compiler and metrics, and
// against each other (ports, probe paths, mounts, names, selectors).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { compileContext, ConfigError, loadConfig, type BrokerConfig } from '../src/config.js';
import { createMetrics } from '../src/metrics.js';
import { compilePolicies } from '../src/policy/compile.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const at = (...parts: string[]) => path.join(ROOT, ...parts);
const read = (...parts: string[]) => readFile(at(...parts), 'utf8');

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

type Obj = Record<string, any>;

/** Kubernetes and Compose read YAML 1.1 with merge keys; a duplicate key is a mistake. */
function yamlDocs(text: string, where: string): Obj[] {
  return parseAllDocuments(text, { version: '1.1', merge: true, uniqueKeys: true }).map((doc, i) => {
    assert.deepEqual(doc.errors, [], `${where}, document ${i + 1}`);
    return doc.toJS() as Obj;
  }).filter((d) => d !== null);
}

/** The `${NAME}` references in a config's string values (the loader substitutes only those, docs/configuration.md). */
function envRefs(text: string): string[] {
  const names = new Set<string>();
  const walk = (value: unknown): void => {
    if (typeof value === 'string') for (const m of value.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) names.add(m[1]!);
    else if (value && typeof value === 'object') Object.values(value).forEach(walk);
  };
  walk(parse(text));
  return [...names].sort();
}

/** A value for every `${NAME}` of a config that the loader accepts (the real ones are secrets). */
function fakeEnv(names: string[]): NodeJS.ProcessEnv {
  return Object.fromEntries(names.map((n) => [n, /SHA256$/.test(n) ? 'ab'.repeat(32) : 'not-a-real-secret']));
}

let scratch: string;
before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'oidc-broker-deploy-'));
});
after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** Loads config text with the real loader, as the file `name` in a scratch directory. */
async function load(text: string, name: string, env: NodeJS.ProcessEnv): Promise<BrokerConfig> {
  const file = path.join(scratch, name);
  await writeFile(file, text);
  return loadConfig(file, env);
}

async function loadError(text: string, name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  try {
    await load(text, name, env);
    return undefined;
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
}

function matches(selector: Obj | undefined, labels: Obj | undefined): boolean {
  const wanted = Object.entries(selector ?? {});
  return wanted.length > 0 && wanted.every(([k, v]) => labels?.[k] === v);
}

function policyFilesOf(data: Obj): { path: string; text: string }[] {
  return Object.entries(data)
    .filter(([name]) => /\.ya?ml$/.test(name) && !/\.test\.ya?ml$/.test(name))
    .map(([name, text]) => ({ path: name, text: String(text) }));
}

/** The config's paths must be absolute: a relative one would resolve against the config file's directory. */
function isUnder(file: string, dir: string): boolean {
  const rel = path.posix.relative(dir, file);
  return rel === '' || (!rel.startsWith('..') && !path.posix.isAbsolute(rel));
}

// ---------------------------------------------------------------------------
// Dockerfile and .dockerignore
// ---------------------------------------------------------------------------

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}

/** Dockerfile instructions by stage: comments dropped, `\` continuations joined. */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue;
    const line = raw.trimEnd();
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    current += line;
    if (current.trim() !== '') logical.push(current.trim().replace(/\s+/g, ' '));
    current = '';
  }
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    if (keyword.toUpperCase() === 'FROM') {
      const [image = '', as, name] = args.split(' ');
      stages.push({ from: image, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else {
      assert.ok(stages.length > 0, `${keyword} before FROM`);
      stages.at(-1)!.instructions.push({ keyword: keyword.toUpperCase(), args });
    }
  }
  return stages;
}

/** COPY's sources and destination (shell form), and its --from stage if any. */
function copyArgs(args: string): { from: string | undefined; sources: string[]; dest: string } {
  const words = args.split(' ');
  const flags = words.filter((w) => w.startsWith('--'));
  const rest = words.filter((w) => !w.startsWith('--'));
  const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
  return { from, sources: rest.slice(0, -1), dest: rest.at(-1)! };
}

/** One shell command of a RUN (split on && and ;). */
function commandsOf(stage: Stage): string[] {
  return stage.instructions.filter((i) => i.keyword === 'RUN').flatMap((i) => i.args.split(/&&|;/).map((c) => c.trim()));
}

/**
 * The build-context rule Docker applies (.dockerignore): the last pattern that
 * matches the path or one of its parent directories decides; `!` re-includes.
 */
function dockerignored(patterns: string[], file: string): boolean {
  const toRegExp = (glob: string) =>
    new RegExp(
      `^${glob
        .split('**')
        .map((part) => part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))
        .join('.*')}$`,
    );
  const prefixes = file.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  let excluded = false;
  for (const raw of patterns) {
    const negated = raw.startsWith('!');
    const glob = (negated ? raw.slice(1) : raw).replace(/^\/+/, '').replace(/\/+$/, '');
    const re = toRegExp(glob);
    if (prefixes.some((p) => re.test(p))) excluded = !negated;
  }
  return excluded;
}

describe('Dockerfile', async () => {
  const dockerfile = await read('Dockerfile');
  const stages = parseDockerfile(dockerfile);
  const runtime = stages.at(-1)!;
  const byName = new Map(stages.filter((s) => s.name).map((s) => [s.name!, s]));
  const ignore = (await read('.dockerignore'))
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const pkg = JSON.parse(await read('package.json')) as { scripts: Record<string, string>; allowScripts?: Record<string, boolean> };
  const lock = JSON.parse(await read('package-lock.json')) as { packages: Record<string, { dev?: boolean; hasInstallScript?: boolean }> };

  /** The stage a stage is built FROM, up to the first one (an image). */
  const ancestry = (stage: Stage): Stage[] => {
    const chain = [stage];
    for (let s = byName.get(stage.from); s; s = byName.get(s.from)) chain.push(s);
    return chain;
  };

  test('one pinned Node 24 image is the base of every stage, so native addons match the runtime', () => {
    // Every stage but the first is built FROM an earlier stage, never from an image of its own.
    const fromImages = stages.filter((s, i) => !stages.slice(0, i).some((earlier) => earlier.name === s.from));
    assert.deepEqual(fromImages, [stages[0]], `stages FROM an image: ${fromImages.map((s) => s.from).join(', ')}`);
    const image = stages[0]!.from;
    assert.match(image, /^node:24\.\d+\.\d+-[a-z]+(-slim)?(@sha256:[0-9a-f]{64})?$/, `${image}: expected node:24.x.y-<distribution>, an exact release`);
    assert.doesNotMatch(image, /:latest|^node:20/);
    for (const stage of stages) assert.equal(ancestry(stage).at(-1), stages[0], `stage ${stage.name ?? stage.from}`);
  });

  test('TypeScript is built once: `npm ci` runs `prepare`, and nothing builds again', () => {
    assert.equal(pkg.scripts.prepare, 'npm run build', 'the reasoning below assumes prepare is the build');
    assert.match(pkg.scripts.build!, /^tsc /);
    const builds = stages.flatMap((s) =>
      commandsOf(s).filter((c) => /\bnpm run build\b|\btsc\b/.test(c) || (/\bnpm (ci|install|i)\b/.test(c) && !c.includes('--ignore-scripts'))),
    );
    assert.deepEqual(builds, ['npm ci']);
    // The built output the runtime copies comes from that stage.
    const distCopy = runtime.instructions.filter((i) => i.keyword === 'COPY').map((i) => copyArgs(i.args)).find((c) => c.sources.includes('/app/dist'));
    assert.ok(distCopy?.from, 'the runtime copies /app/dist from a build stage');
    assert.ok(commandsOf(byName.get(distCopy.from)!).includes('npm ci'));
  });

  test('the runtime has production dependencies only, with the allowed install scripts rebuilt, and no toolchain', () => {
    const modules = runtime.instructions.filter((i) => i.keyword === 'COPY').map((i) => copyArgs(i.args)).find((c) => c.sources.includes('/app/node_modules'));
    assert.ok(modules?.from, 'the runtime copies node_modules from a stage');
    const deps = commandsOf(byName.get(modules.from)!);
    const ci = deps.find((c) => /^npm ci\b/.test(c));
    assert.ok(ci?.includes('--omit=dev') && ci.includes('--ignore-scripts'), `${ci}: expected npm ci --omit=dev --ignore-scripts`);
    // Production packages with an install script that package.json allows: exactly these are rebuilt.
    const allowed = Object.entries(lock.packages)
      .filter(([p, v]) => p.startsWith('node_modules/') && !v.dev && v.hasInstallScript)
      .map(([p]) => p.slice('node_modules/'.length))
      .filter((name) => pkg.allowScripts?.[name] === true)
      .sort();
    assert.deepEqual(allowed, ['better-sqlite3']);
    const rebuilt = deps.filter((c) => c.startsWith('npm rebuild')).flatMap((c) => c.split(' ').slice(2)).sort();
    assert.deepEqual(rebuilt, allowed);
    assert.equal(commandsOf(runtime).some((c) => /apt-get|npm (ci|install)/.test(c)), false, 'nothing is installed in the runtime stage');
  });

  test('runs as a numeric non-root user, with no PORT baked in and the data directory a volume', () => {
    const users = runtime.instructions.filter((i) => i.keyword === 'USER');
    assert.ok(users.length > 0, 'USER in the runtime stage');
    const user = users.at(-1)!.args;
    assert.match(user, /^\d+(:\d+)?$/, 'numeric, so Kubernetes runAsNonRoot can check it');
    assert.notEqual(Number(user.split(':')[0]), 0);
    // PORT overrides server.port (docs/configuration.md): an image default would silently win over the config.
    assert.equal(runtime.instructions.some((i) => i.keyword === 'ENV' && /\bPORT\b/.test(i.args)), false);
    assert.ok(runtime.instructions.some((i) => i.keyword === 'VOLUME' && i.args.includes('/app/data')));
    const entrypoint = runtime.instructions.find((i) => i.keyword === 'CMD');
    assert.deepEqual(JSON.parse(entrypoint!.args), ['serve', '--config', '/etc/oidc-broker/broker.yaml']);
  });

  test('HEALTHCHECK runs the shipped script, with a timeout longer than the script deadline', async () => {
    const checks = runtime.instructions.filter((i) => i.keyword === 'HEALTHCHECK');
    assert.equal(checks.length, 1);
    const [, flags = '', cmd = ''] = /^(.*?)CMD (.*)$/.exec(checks[0]!.args) ?? [];
    const argv = JSON.parse(cmd) as string[];
    assert.equal(argv[0], 'node');
    const script = argv[1]!;
    assert.ok(existsSync(at(script)), `${script} exists`);
    const copied = runtime.instructions
      .filter((i) => i.keyword === 'COPY')
      .map((i) => copyArgs(i.args))
      .some((c) => !c.from && c.sources.includes(script) && path.posix.join('/app', c.dest.replace(/^\.\//, '')) === path.posix.join('/app', script));
    assert.ok(copied, `${script} is copied to /app/${script}`);
    const timeout = /--timeout=(\d+)s/.exec(flags);
    assert.ok(timeout, 'HEALTHCHECK --timeout');
    assert.match(await read(script), /HEALTHCHECK_TIMEOUT_MS \|\| 2000/);
    assert.ok(Number(timeout[1]) * 1000 > 2000);
  });

  test('.dockerignore keeps out node_modules, data, tests and local secrets, and lets in every COPY source', () => {
    for (const file of ['node_modules/yaml/package.json', 'data/audit.db', 'data/signing-key.jwk', 'test/deploy.test.ts', 'dist/cli/index.js', '.git/HEAD', 'broker.yaml', 'auditor.token', 'deploy/compose.yaml', 'scripts/demo.ts']) {
      assert.equal(dockerignored(ignore, file), true, `${file} is excluded`);
    }
    const sources = stages.flatMap((s) => s.instructions.filter((i) => i.keyword === 'COPY').map((i) => copyArgs(i.args)).filter((c) => !c.from).flatMap((c) => c.sources));
    assert.ok(sources.length >= 5);
    for (const source of sources) {
      assert.ok(existsSync(at(source)), `${source} exists`);
      assert.equal(dockerignored(ignore, source), false, `${source} is in the build context`);
      if (statSync(at(source)).isDirectory()) assert.equal(dockerignored(ignore, `${source}/any/file.ts`), false, `${source}/ is in the build context`);
    }
  });

  test('the image ships no policies (it shipped local-dev.test.yaml without local-dev.yaml): they come from a mount', async () => {
    const policyFiles = (await readdir(at('policies'))).filter((n) => /\.ya?ml$/.test(n));
    assert.ok(policyFiles.length > 0);
    for (const name of policyFiles) assert.equal(dockerignored(ignore, `policies/${name}`), true, `policies/${name}`);
    const copies = stages.flatMap((s) => s.instructions.filter((i) => i.keyword === 'COPY').map((i) => copyArgs(i.args)));
    assert.equal(copies.some((c) => c.sources.some((src) => src === '.' || src.startsWith('policies'))), false);
    assert.ok(commandsOf(runtime).some((c) => c.includes('/app/policies')), 'an empty /app/policies mount point');
  });
});

// ---------------------------------------------------------------------------
// scripts/healthcheck.js, run against a stub of /readyz
// ---------------------------------------------------------------------------

describe('scripts/healthcheck.js', () => {
  let server: http.Server;
  let port: number;
  let status = 200;
  let hang = false;
  const paths: string[] = [];

  before(async () => {
    server = http.createServer((req, res) => {
      paths.push(req.url ?? '');
      if (hang) return; // accepts, never answers
      res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function run(env: NodeJS.ProcessEnv): Promise<{ code: number | null; ms: number; stderr: string }> {
    const started = Date.now();
    const child = spawn(process.execPath, [at('scripts', 'healthcheck.js')], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    return new Promise((resolve) => child.on('close', (code) => resolve({ code, ms: Date.now() - started, stderr })));
  }

  test('exit 0 when /readyz on $PORT answers 200', async () => {
    status = 200;
    paths.length = 0;
    const result = await run({ PORT: String(port) });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(paths, ['/readyz']);
  });

  test('exit 1 when /readyz answers 503', async () => {
    status = 503;
    const result = await run({ PORT: String(port) });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /status 503/);
  });

  test('exit 1 within the deadline when the broker accepts but never answers', async () => {
    hang = true;
    try {
      const result = await run({ PORT: String(port), HEALTHCHECK_TIMEOUT_MS: '300' });
      assert.equal(result.code, 1);
      assert.match(result.stderr, /within 300 ms/);
      assert.ok(result.ms < 5000, `took ${result.ms} ms`);
    } finally {
      hang = false;
    }
  });

  test('exit 1 when nothing listens', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const freePort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const result = await run({ PORT: String(freePort) });
    assert.equal(result.code, 1);
  });

  test('HEALTHCHECK_URL replaces the loopback URL', async () => {
    status = 200;
    paths.length = 0;
    const result = await run({ PORT: '1', HEALTHCHECK_URL: `http://127.0.0.1:${port}/readyz?from=env` });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(paths, ['/readyz?from=env']);
  });
});

// ---------------------------------------------------------------------------
// Kubernetes manifests
// ---------------------------------------------------------------------------

describe('deploy/kubernetes', async () => {
  const DIR = 'deploy/kubernetes';
  const files = (await readdir(at(DIR))).filter((n) => /\.ya?ml$/.test(n)).sort();
  const resources: { file: string; doc: Obj }[] = [];
  for (const file of files) for (const doc of yamlDocs(await read(DIR, file), `${DIR}/${file}`)) resources.push({ file, doc });
  const kinds = (kind: string) => resources.filter((r) => r.doc.kind === kind).map((r) => r.doc);
  const one = (kind: string, name?: string) => {
    const found = kinds(kind).filter((d) => name === undefined || d.metadata?.name === name);
    assert.equal(found.length, 1, `one ${kind}${name ? ` ${name}` : ''}`);
    return found[0]!;
  };

  const deployment = one('Deployment');
  const pod = deployment.spec.template;
  const podLabels = pod.metadata.labels as Obj;
  const containers = pod.spec.containers as Obj[];
  const initContainers = (pod.spec.initContainers ?? []) as Obj[];
  const broker = containers.find((c) => c.name === 'broker')!;
  const configMaps = new Map(kinds('ConfigMap').map((d) => [d.metadata.name as string, d]));
  const secrets = new Map(kinds('Secret').map((d) => [d.metadata.name as string, d]));
  const volumes = new Map((pod.spec.volumes as Obj[]).map((v) => [v.name as string, v]));
  const mounts = broker.volumeMounts as Obj[];

  // The config the broker is started with: args --config, in the ConfigMap mounted there.
  const args = broker.args as string[];
  const configPath = args[args.indexOf('--config') + 1]!;
  const configMount = mounts.find((m) => isUnder(configPath, m.mountPath))!;
  const configMap = configMaps.get(volumes.get(configMount.name)?.configMap?.name)!;
  const configText = String(configMap?.data?.[path.posix.basename(configPath)]);
  const rawConfig = parse(configText) as Obj;
  const env = new Map((broker.env as Obj[]).map((e) => [e.name as string, e]));
  const containerPort = (ref: string | number) => (broker.ports as Obj[]).find((p) => p.name === ref || p.containerPort === ref)?.containerPort as number | undefined;
  const mountOf = (file: string) => mounts.filter((m) => isUnder(file, m.mountPath)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];

  let config: BrokerConfig;
  before(async () => {
    config = await load(JSON.stringify(rawConfig), 'k8s-broker.yaml', fakeEnv(envRefs(configText)));
  });

  test('kustomization lists every manifest except the example Secrets, and every resource is in one namespace', async () => {
    const kustomization = parse(await read(DIR, 'kustomization.yaml')) as Obj;
    const listed = [...(kustomization.resources as string[])].sort();
    assert.deepEqual(listed, files.filter((f) => f !== 'kustomization.yaml' && f !== 'secrets.example.yaml'));
    for (const { file, doc } of resources) {
      if (doc.kind === 'Kustomization' || doc.kind === 'Namespace') continue;
      assert.equal(doc.metadata?.namespace, kustomization.namespace, `${file}: ${doc.kind} ${doc.metadata?.name}`);
    }
    assert.equal(one('Namespace').metadata.name, kustomization.namespace);
  });

  test("the ConfigMap's broker.yaml loads with the real loader (src/config.ts)", () => {
    assert.equal(config.server.host, '0.0.0.0');
    assert.match(config.server.publicUrl, /^https:\/\//);
    assert.match(config.audit.url, /^postgres:\/\//, 'replicas share a PostgreSQL audit log');
    assert.deepEqual(config.issuers.map((i) => i.name), ['github']);
    assert.ok(config.auditors.length > 0);
    assert.match(String(rawConfig.replay?.url), /^rediss?:\/\//, 'replicas share a Redis replay store');
    assert.equal(typeof rawConfig.server?.admin_port, 'number');
  });

  test('container ports are server.port (http) and server.admin_port (admin); no PORT overrides them', () => {
    assert.equal(containerPort('http'), config.server.port);
    assert.equal(containerPort('admin'), rawConfig.server.admin_port);
    assert.notEqual(config.server.port, rawConfig.server.admin_port);
    assert.equal(env.has('PORT'), false);
  });

  test('probes: readiness /readyz, liveness and startup /healthz, on the API port', () => {
    assert.equal(broker.readinessProbe?.httpGet?.path, '/readyz');
    assert.equal(broker.livenessProbe?.httpGet?.path, '/healthz');
    assert.equal(broker.startupProbe?.httpGet?.path, '/healthz');
    for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
      assert.equal(containerPort(broker[probe].httpGet.port), config.server.port, probe);
    }
  });

  test('every volumeMount has a volume, every volume is used, and the ConfigMaps and Secrets they name exist', () => {
    const used = new Set<string>();
    for (const c of [...containers, ...initContainers]) {
      for (const m of c.volumeMounts ?? []) {
        assert.ok(volumes.has(m.name), `${c.name}: volume ${m.name}`);
        used.add(m.name);
      }
    }
    assert.deepEqual([...volumes.keys()].filter((v) => !used.has(v)), []);
    for (const v of volumes.values()) {
      if (v.configMap) assert.ok(configMaps.has(v.configMap.name), `ConfigMap ${v.configMap.name}`);
      if (v.secret) assert.ok(secrets.has(v.secret.secretName), `Secret ${v.secret.secretName}`);
    }
  });

  test('every ${NAME} of broker.yaml comes from an existing Secret key, and the example placeholders fail closed', async () => {
    const names = envRefs(configText);
    assert.ok(names.length >= 3);
    const example: NodeJS.ProcessEnv = {};
    for (const name of names) {
      const ref = env.get(name)?.valueFrom?.secretKeyRef;
      assert.ok(ref, `${name} is set from a Secret`);
      const secret = secrets.get(ref.name);
      assert.ok(secret, `Secret ${ref.name}`);
      assert.ok(ref.key in (secret.stringData ?? secret.data ?? {}), `Secret ${ref.name} has key ${ref.key}`);
      example[name] = String(secret.stringData[ref.key]);
    }
    for (const e of env.values()) {
      const ref = e.valueFrom?.secretKeyRef;
      if (ref) assert.ok(ref.key in (secrets.get(ref.name)?.stringData ?? {}), `${e.name}: Secret ${ref.name} key ${ref.key}`);
    }
    const error = await loadError(JSON.stringify(rawConfig), 'k8s-placeholders.yaml', example);
    assert.match(error ?? 'loaded', /auditors\[0\]\.token_sha256: expected the lowercase hex SHA-256/);
  });

  test('policies.dir is the policies ConfigMap, whose files compile against this config and match policies/', async () => {
    const mount = mountOf(config.policies.dir);
    assert.equal(mount?.mountPath, config.policies.dir, 'mounted as the directory itself (no subPath), so updates reach the broker');
    assert.equal(mount.subPath, undefined);
    const policies = configMaps.get(volumes.get(mount.name)?.configMap?.name);
    assert.ok(policies, 'a ConfigMap volume');
    const files = policyFilesOf(policies.data as Obj);
    assert.ok(files.length > 0);
    const result = compilePolicies(files, compileContext(config));
    assert.equal(result.ok, true, JSON.stringify(!result.ok && result.issues));
    for (const file of files) assert.equal(file.text, await read('policies', file.path), `${file.path} differs from policies/${file.path}`);
  });

  test('the signing key reaches a private directory from the Secret, and the broker writes nowhere else', () => {
    const key = config.providers.jwt.signingKeyFile;
    const mount = mountOf(key);
    assert.ok(mount, `${key} is on a volume`);
    assert.equal(mount.readOnly, true, 'the broker only reads it');
    assert.ok(volumes.get(mount.name)?.emptyDir, 'an emptyDir the init container fills');
    const init = initContainers.find((c) => (c.volumeMounts as Obj[]).some((m) => m.name === mount.name && !m.readOnly));
    assert.ok(init, 'an init container writes it');
    assert.equal(init.image, broker.image, 'the init container runs the broker image (its sh and install)');
    const secretMount = (init.volumeMounts as Obj[]).find((m) => volumes.get(m.name)?.secret);
    assert.ok(secretMount, 'the init container reads a Secret');
    const secret = secrets.get(volumes.get(secretMount.name)?.secret.secretName);
    assert.ok(secret);
    const command = (init.command as string[]).join(' ');
    const source = path.posix.join(secretMount.mountPath, path.posix.basename(key));
    assert.ok(path.posix.basename(key) in secret.stringData, `the Secret holds ${path.posix.basename(key)}`);
    // The broker refuses a key other users or the group can read (src/keys/signing-key.ts).
    assert.ok(command.includes(`install -m 0600 ${source} ${path.posix.join(mount.mountPath, path.posix.basename(key))}`), command);
    // Nothing else to write: the audit log is in PostgreSQL, and the only writable mounts are scratch.
    assert.doesNotMatch(config.audit.url, /^sqlite:/);
    for (const m of mounts.filter((m) => !m.readOnly)) assert.ok(volumes.get(m.name)?.emptyDir, `${m.mountPath} is scratch`);
  });

  test('the audit trusted head is on a writable volume of the broker, not beside the read-only key (docs/audit.md)', () => {
    const mount = mountOf(config.audit.headFile);
    assert.ok(mount, `${config.audit.headFile} is on a volume`);
    assert.notEqual(mount.readOnly, true, 'the broker writes it after every checkpoint');
    assert.notEqual(mount.name, mountOf(config.providers.jwt.signingKeyFile)?.name);
  });

  test('securityContext: non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp', async () => {
    const podContext = pod.spec.securityContext as Obj;
    const dockerUser = /^USER (\d+)/m.exec(await read('Dockerfile'))?.[1];
    assert.equal(String(podContext.runAsUser), dockerUser, 'the image user');
    assert.equal(pod.spec.automountServiceAccountToken, false);
    for (const c of [...containers, ...initContainers]) {
      const s = c.securityContext as Obj;
      assert.equal(s?.runAsNonRoot ?? podContext.runAsNonRoot, true, `${c.name}: runAsNonRoot`);
      assert.equal(s?.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`);
      assert.equal(s?.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation`);
      assert.deepEqual(s?.capabilities?.drop, ['ALL'], `${c.name}: capabilities`);
      assert.equal(s?.capabilities?.add, undefined, `${c.name}: capabilities.add`);
      assert.equal((s?.seccompProfile ?? podContext.seccompProfile)?.type, 'RuntimeDefault', `${c.name}: seccomp`);
      assert.notEqual(s?.privileged, true);
    }
  });

  test('resources, image pins and three replicas', () => {
    assert.equal(deployment.spec.replicas, 3);
    assert.ok(matches(deployment.spec.selector.matchLabels, podLabels), 'the Deployment selects its own pods');
    for (const c of [...containers, ...initContainers]) {
      for (const kind of ['requests', 'limits']) for (const r of ['cpu', 'memory']) assert.ok(c.resources?.[kind]?.[r], `${c.name}: resources.${kind}.${r}`);
      assert.match(c.image, /^[^:@\s]+(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$/, c.image);
      assert.ok(/:[\w.-]+|@sha256:/.test(c.image) && !/:latest\b/.test(c.image), `${c.name}: pinned image ${c.image}`);
    }
    // Shutdown: preStop, then up to 10 s for in-flight requests and the audit flush (README.md).
    const preStop = Number((broker.lifecycle?.preStop?.exec?.command as string[] | undefined)?.[1] ?? 0);
    assert.ok(pod.spec.terminationGracePeriodSeconds > preStop + 10);
    assert.equal(deployment.spec.strategy.rollingUpdate.maxUnavailable, 0);
  });

  test('Services, PodDisruptionBudget, HorizontalPodAutoscaler and NetworkPolicy select the broker pods', () => {
    for (const svc of kinds('Service')) {
      assert.ok(matches(svc.spec.selector, podLabels), `Service ${svc.metadata.name}`);
      for (const p of svc.spec.ports as Obj[]) assert.ok(containerPort(p.targetPort), `Service ${svc.metadata.name}: targetPort ${p.targetPort}`);
    }
    const api = one('Service', 'oidc-broker');
    assert.ok((api.spec.ports as Obj[]).some((p) => containerPort(p.targetPort) === config.server.port));
    const pdb = one('PodDisruptionBudget');
    assert.ok(matches(pdb.spec.selector.matchLabels, podLabels));
    const disruptable = pdb.spec.maxUnavailable !== undefined ? pdb.spec.maxUnavailable >= 1 : pdb.spec.minAvailable < deployment.spec.replicas;
    assert.ok(disruptable, 'a drain can evict one pod at a time');
    const hpa = one('HorizontalPodAutoscaler');
    assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    assert.equal(hpa.spec.minReplicas, deployment.spec.replicas);
    assert.ok(hpa.spec.maxReplicas > hpa.spec.minReplicas);
    assert.ok(matches(one('NetworkPolicy').spec.podSelector.matchLabels, podLabels));
  });

  test('ServiceMonitor scrapes /metrics on server.admin_port through the metrics Service', () => {
    const monitor = one('ServiceMonitor');
    const svc = kinds('Service').filter((s) => matches(monitor.spec.selector.matchLabels, s.metadata.labels));
    assert.equal(svc.length, 1, 'one Service matches');
    assert.ok((monitor.spec.namespaceSelector.matchNames as string[]).includes(svc[0]!.metadata.namespace));
    for (const endpoint of monitor.spec.endpoints as Obj[]) {
      assert.equal(endpoint.path, '/metrics');
      const port = (svc[0]!.spec.ports as Obj[]).find((p) => p.name === endpoint.port);
      assert.ok(port, `port ${endpoint.port}`);
      assert.equal(containerPort(port.targetPort), rawConfig.server.admin_port);
    }
  });

  test('NetworkPolicy: the API port from anywhere, the admin port from Prometheus only, and the egress the config needs', () => {
    const policy = one('NetworkPolicy');
    assert.deepEqual([...policy.spec.policyTypes].sort(), ['Egress', 'Ingress']);
    const allows = (rules: Obj[], port: number) => rules.filter((r) => (r.ports as Obj[] | undefined)?.some((p) => p.port === port || containerPort(p.port) === port));
    const api = allows(policy.spec.ingress, config.server.port);
    assert.ok(api.some((r) => r.from === undefined), 'the API is open to the ingress');
    const admin = allows(policy.spec.ingress, rawConfig.server.admin_port);
    assert.ok(admin.length > 0 && admin.every((r) => Array.isArray(r.from) && r.from.length > 0), 'the admin port is restricted');
    const postgres = Number(new URL(config.audit.url).port || 5432);
    const redis = Number(new URL(String(rawConfig.replay.url)).port || 6379);
    for (const port of [53, postgres, redis, 443]) assert.ok(allows(policy.spec.egress, port).length > 0, `egress ${port}`);
  });

  describe('Prometheus alerts (deploy/prometheus/alerts.yaml)', async () => {
    const rules = (parse(await read('deploy/prometheus/alerts.yaml')) as Obj).groups.flatMap((g: Obj) => g.rules as Obj[]) as Obj[];
    const metrics = createMetrics();
    const known = new Map<string, string[]>();
    for (const m of await metrics.registry.getMetricsAsJSON()) {
      const labels = (metrics.registry.getSingleMetric(m.name) as unknown as { labelNames?: string[] }).labelNames ?? [];
      known.set(m.name, labels);
      if (String(m.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) known.set(`${m.name}${suffix}`, [...labels, 'le']);
    }
    // Made by Prometheus itself for every target.
    known.set('up', []);

    /** Metric names of a PromQL expression: identifiers that are not functions, keywords, labels, strings or durations. */
    function metricNames(expr: string): { name: string; labels: string[] }[] {
      const keywords = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'inf', 'nan']);
      const text = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\[[^\]]*\]/g, '').replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
      const found: { name: string; labels: string[] }[] = [];
      for (const m of text.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?/g)) {
        const [, name = '', matchers, call] = m;
        if (call || keywords.has(name.toLowerCase())) continue;
        found.push({ name, labels: [...(matchers ?? '').matchAll(/([A-Za-z_]\w*)\s*(=~|!~|!=|=)/g)].map((l) => l[1]!) });
      }
      return found;
    }

    test('the PromQL name extraction finds metrics and skips functions, keywords and label lists', () => {
      assert.deepEqual(
        metricNames('sum by (policy) (rate(broker_exchanges_total{decision="denied", provider=~"aws|gcp"}[5m])) > 0 unless up == 0'),
        [
          { name: 'broker_exchanges_total', labels: ['decision', 'provider'] },
          { name: 'up', labels: [] },
        ],
      );
    });

    test('every rule is complete and uses only metrics (and their labels) this version exports', () => {
      assert.ok(rules.length >= 8);
      for (const rule of rules) {
        assert.match(rule.alert, /^OidcBroker[A-Za-z]+$/);
        assert.ok(['page', 'warning'].includes(rule.labels?.severity), `${rule.alert}: severity`);
        assert.ok(rule.annotations?.summary, `${rule.alert}: summary`);
        const used = metricNames(String(rule.expr));
        assert.ok(used.length > 0, `${rule.alert}: no metric found in ${rule.expr}`);
        for (const { name, labels } of used) {
          assert.ok(known.has(name), `${rule.alert}: ${name} is not a metric of src/metrics.ts`);
          for (const label of labels) assert.ok([...known.get(name)!, 'job', 'instance'].includes(label), `${rule.alert}: ${name} has no label ${label}`);
        }
      }
    });

    test("the scrape-health alert names the ServiceMonitor's Service as its job", () => {
      const down = rules.find((r) => /\bup\{/.test(String(r.expr)));
      assert.ok(down);
      const job = /job="([^"]+)"/.exec(String(down.expr))?.[1];
      const monitor = one('ServiceMonitor');
      assert.ok(kinds('Service').some((s) => s.metadata.name === job && matches(monitor.spec.selector.matchLabels, s.metadata.labels)), `job ${job}`);
    });
  });
});

// ---------------------------------------------------------------------------
// Compose
// ---------------------------------------------------------------------------

describe('deploy/compose.yaml', async () => {
  const compose = yamlDocs(await read('deploy/compose.yaml'), 'deploy/compose.yaml')[0]!;
  const services = compose.services as Obj;
  const broker = services.broker as Obj;
  const command = broker.command as string[];
  const configPath = command[command.indexOf('--config') + 1]!;
  /** Bind mounts and named volumes: source, target, read-only. */
  const volumes = (broker.volumes as string[]).map((v) => {
    const [source = '', target = '', mode] = v.split(':');
    return { source, target, readOnly: mode === 'ro' };
  });
  const configBind = volumes.find((v) => v.target === configPath)!;
  const configText = await read('deploy', configBind.source);
  const rawConfig = parse(configText) as Obj;

  let config: BrokerConfig;
  before(async () => {
    config = await load(JSON.stringify(rawConfig), 'compose-broker.yaml', fakeEnv(envRefs(configText)));
  });

  test('three hardened broker replicas, started after healthy PostgreSQL and Redis', async () => {
    assert.equal(broker.deploy.replicas, 3);
    assert.equal(broker.read_only, true);
    assert.deepEqual(broker.cap_drop, ['ALL']);
    assert.ok((broker.security_opt as string[]).includes('no-new-privileges:true'));
    const dockerUser = /^USER (\S+)/m.exec(await read('Dockerfile'))?.[1];
    assert.equal(broker.user, dockerUser);
    assert.ok(broker.deploy.resources.limits.memory && broker.deploy.resources.limits.cpus);
    for (const dep of ['postgres', 'redis']) {
      assert.equal(broker.depends_on[dep]?.condition, 'service_healthy', dep);
      assert.ok(services[dep].healthcheck?.test, `${dep} has a healthcheck`);
    }
    for (const [name, svc] of Object.entries(services) as [string, Obj][]) {
      if (!svc.build) assert.match(String(svc.image), /:\d+(\.\d+)+[\w.-]*$/, `${name}: a pinned version tag`);
    }
  });

  test('broker.yaml loads with the real loader and points at the Compose services', () => {
    const audit = new URL(config.audit.url);
    assert.equal(audit.protocol, 'postgres:');
    assert.ok(services[audit.hostname], `audit host ${audit.hostname} is a service`);
    assert.equal(services[audit.hostname].environment.POSTGRES_DB, audit.pathname.slice(1));
    assert.equal(services[audit.hostname].environment.POSTGRES_USER, audit.username);
    const replay = new URL(String(rawConfig.replay.url));
    assert.equal(replay.protocol, 'redis:');
    assert.ok(services[replay.hostname], `replay host ${replay.hostname} is a service`);
    assert.equal(config.server.host, '0.0.0.0');
  });

  test('every ${NAME} of broker.yaml is passed to the broker, and required', () => {
    for (const name of envRefs(configText)) assert.match(String(broker.environment[name]), new RegExp(`^\\$\\{${name}:\\?`), name);
  });

  test('ports: the published target is server.port, which the image HEALTHCHECK probes; the admin port stays private', async () => {
    const targets = (broker.ports as string[]).map((p) => Number(p.split(':').at(-1)));
    assert.deepEqual(targets, [config.server.port]);
    assert.equal(broker.environment.PORT, undefined);
    // scripts/healthcheck.js probes $PORT, default 8080.
    assert.match(await read('scripts/healthcheck.js'), /process\.env\.PORT \|\| '8080'/);
    assert.equal(config.server.port, 8080);
    assert.notEqual(rawConfig.server.admin_port, undefined);
  });

  test('config and policies are mounted read-only; the signing key is on the shared volume', async () => {
    assert.equal(configBind.readOnly, true);
    const policies = volumes.find((v) => v.target === config.policies.dir);
    assert.ok(policies?.readOnly, 'policies.dir is a read-only mount');
    const files = (await readdir(at('deploy', policies.source))).filter((n) => /\.ya?ml$/.test(n));
    const texts = await Promise.all(files.map(async (n) => ({ path: n, text: await read('deploy', policies.source, n) })));
    const result = compilePolicies(texts, compileContext(config));
    assert.equal(result.ok, true, JSON.stringify(!result.ok && result.issues));
    for (const file of texts) assert.equal(file.text, await read('policies', file.path), `${file.path} differs from policies/${file.path}`);
    const key = config.providers.jwt.signingKeyFile;
    const data = volumes.find((v) => isUnder(key, v.target));
    assert.ok(data && !data.readOnly && (compose.volumes as Obj)[data.source] !== undefined, `${key} is on a named, writable volume`);
    const head = volumes.find((v) => isUnder(config.audit.headFile, v.target));
    assert.ok(head && !head.readOnly && (compose.volumes as Obj)[head.source] !== undefined, `the trusted head ${config.audit.headFile} is on a named, writable volume`);
    // The read-only root leaves only the volumes and /tmp to write to; the audit log is not SQLite.
    assert.doesNotMatch(config.audit.url, /^sqlite:/);
  });
});

// ---------------------------------------------------------------------------
// Keys awaiting loader support, and the docs
// ---------------------------------------------------------------------------

test('docs/operations.md is linked from the README and links only to files that exist', async () => {
  assert.ok((await read('README.md')).includes('](docs/operations.md)'), 'README.md links docs/operations.md');
  const doc = await read('docs/operations.md');
  const links = [...doc.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)].map((m) => m[1]!).filter((l) => !/^[a-z]+:/.test(l));
  assert.ok(links.length > 5);
  for (const link of links) assert.ok(existsSync(path.join(at('docs'), link)), `docs/operations.md links to ${link}`);
});
