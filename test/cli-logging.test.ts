// Logging as a real process shows it (bin/oidc-broker.js): LOG_LEVEL in any case, an invalid one refused at start, JSON lines
// only (the AWS SDK's Node.js notice included), an access line per request, and no token or Authorization header anywhere.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startDevIssuer } from '../src/dev/issuer.js';
import { LOG_LEVELS, LogLevelError, parseLogLevel } from '../src/logger.js';
import { startStsEmulator } from './emulators/index.js';
import { cliProcess, spawnCli, waitForOutput, logLine, type CliProcess } from './helpers/cli.js';
import { localJwtPolicy } from './helpers/oidc.js';

const SDK_NOTICE = 'the AWS SDK will require Node.js 22';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-logging-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

/** Every stdout line, parsed: fails on the first that is not a JSON object. */
function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      let parsed: unknown;
      assert.doesNotThrow(() => (parsed = JSON.parse(line)), `not a JSON line: ${line}`);
      assert.equal(typeof parsed, 'object', line);
      return parsed as Record<string, unknown>;
    });
}

/** Resolves with the access line of the request with this id once it is logged. */
function accessLineOf(run: CliProcess, requestId: string): Promise<Record<string, unknown>> {
  return waitForOutput(run, (stdout) => jsonLines(stdout.slice(0, stdout.lastIndexOf('\n') + 1)).find((line) => line.msg === 'request' && line.request_id === requestId));
}

describe('LOG_LEVEL', () => {
  test('names a level in any case; unset or empty is info', () => {
    assert.deepEqual(
      ['DEBUG', 'Info', 'warn', 'SILLY', 'Error', 'hTTP', 'Verbose'].map((value) => parseLogLevel(value)),
      ['debug', 'info', 'warn', 'silly', 'error', 'http', 'verbose'],
    );
    assert.equal(parseLogLevel(undefined), 'info');
    assert.equal(parseLogLevel(''), 'info');
    for (const value of ['loud', 'trace', 'fatal', 'warning', ' debug', 'debug ', 'info,debug', '2', 'DEBUGGING']) {
      assert.throws(() => parseLogLevel(value), { name: LogLevelError.name, message: `environment LOG_LEVEL: expected one of ${LOG_LEVELS.join(', ')} (in any case), got '${value}'` });
    }
  });

  // Each test has its own process: they run side by side.
  describe('as real processes', { concurrency: true }, () => {
    for (const args of [['serve'], ['dev', 'issuer', '--port', '0']]) {
      test(`an invalid LOG_LEVEL stops \`${args.join(' ')}\` before it starts: exit 1, a cannot start line, the reason on stderr`, async () => {
        const cwd = path.join(dir, `invalid-${args[0]!}`);
        await mkdir(cwd);
        const run = await cliProcess(args, { cwd, env: { LOG_LEVEL: 'Loud', PORT: '0' } });
        const reason = "environment LOG_LEVEL: expected one of error, warn, info, http, verbose, debug, silly (in any case), got 'Loud'";
        assert.equal(run.code, 1, run.stderr);
        assert.equal(run.stderr, `oidc-broker: cannot start:\n${reason}\n`);
        const lines = jsonLines(run.stdout);
        assert.equal(lines.length, 1, run.stdout);
        assert.deepEqual([lines[0]!.msg, lines[0]!.level, lines[0]!.error], ['cannot start', 'error', reason]);
      });
    }

    test('LOG_LEVEL=DEBUG: debug lines too; start-up, an AWS and a jwt exchange, a probe and a 404 print only JSON lines, with one access line each and no token', async () => {
      const cwd = path.join(dir, 'debug');
      await mkdir(path.join(cwd, 'policies'), { recursive: true });
      const brokerKey = { accessKeyId: 'AKIAOIDCBROKERLOGGING', secretAccessKey: 'broker/secret/key/for/logging/tests/only' };
      const [issuer, sts] = await Promise.all([startDevIssuer({ port: 0 }), startStsEmulator({ ...brokerKey, region: 'eu-west-1' })]);
      try {
        await writeFile(path.join(cwd, 'policies', 'aws.yaml'), 'issuer: local\nclaims:\n  repository: acme/api\ngrant:\n  provider: aws\n  role_arn: arn:aws:iam::123456789012:role/deploy-api\n');
        await writeFile(path.join(cwd, 'policies', 'jwt.yaml'), localJwtPolicy('https://deploy.example.com'));
        await writeFile(
          path.join(cwd, 'broker.yaml'),
          `server: { host: 127.0.0.1, port: 0 }\nissuers:\n  - { name: local, issuer: "${issuer.url}", audiences: [https://broker.example.com] }\nproviders:\n  aws: { region: eu-west-1, endpoint: "${sts.url}" }\n`,
        );
        const broker = spawnCli(['serve'], {
          cwd,
          env: { LOG_LEVEL: 'DEBUG', AWS_ACCESS_KEY_ID: brokerKey.accessKeyId, AWS_SECRET_ACCESS_KEY: brokerKey.secretAccessKey, AWS_SESSION_TOKEN: '', AWS_PROFILE: '', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: undefined },
        });
        const { url } = (await waitForOutput(broker, logLine('listening'))) as { url: string };
        const tokens: string[] = [];
        const exchange = async (policy: string) => {
          const token = await issuer.mint({ aud: 'https://broker.example.com', repository: 'acme/api' });
          tokens.push(token);
          const res = await fetch(`${url}/v1/exchange`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', cookie: 'oidc_broker_console=session-cookie-value' }, body: JSON.stringify({ policy }) });
          const body = (await res.json()) as { credentials?: Record<string, string> };
          assert.equal(res.status, 200, JSON.stringify(body));
          tokens.push(...Object.values(body.credentials ?? {}).filter((value) => value.length > 20));
          return res.headers.get('x-request-id')!;
        };
        const awsId = await exchange('aws');
        const jwtId = await exchange('jwt');
        const healthz = await fetch(`${url}/healthz`);
        const missing = await fetch(`${url}/v1/nothing?subject=repo:acme/private`);
        assert.deepEqual([healthz.status, missing.status], [200, 404]);

        for (const [id, method, route, status, level] of [
          [awsId, 'POST', '/v1/exchange', 200, 'info'],
          [jwtId, 'POST', '/v1/exchange', 200, 'info'],
          [healthz.headers.get('x-request-id')!, 'GET', '/healthz', 200, 'debug'],
          [missing.headers.get('x-request-id')!, 'GET', null, 404, 'info'],
        ] as const) {
          const line = await accessLineOf(broker, id);
          assert.deepEqual([line.method, line.route, line.status, line.level], [method, route, status, level]);
          assert.equal(typeof line.duration_ms, 'number');
          assert.match(line.client_ip as string, /^(::ffff:)?127\.0\.0\.1$/);
        }
        broker.child.kill('SIGTERM');
        assert.equal(await broker.exited, 0);

        // Only JSON lines, on stdout; nothing on stderr (on Node.js 20, not the AWS SDK's notice either).
        assert.equal(broker.stderr(), '');
        const lines = jsonLines(broker.stdout());
        const notices = lines.filter((line) => line.msg === SDK_NOTICE);
        if (Number(process.versions.node.split('.')[0]) < 22) {
          assert.equal(notices.length, 1, 'the SDK notice, once, as a log line');
          assert.deepEqual([notices[0]!.level, notices[0]!.node_version], ['warn', process.version]);
          // Said at start, before the broker listens, not in the middle of the exchanges.
          assert.ok(lines.indexOf(notices[0]!) < lines.findIndex((line) => line.msg === 'listening'));
        } else {
          assert.equal(notices.length, 0);
        }
        const everything = broker.stdout() + broker.stderr();
        for (const secret of [...tokens, brokerKey.secretAccessKey, 'session-cookie-value']) assert.ok(!everything.includes(secret), `a secret in the output: ${secret.slice(0, 12)}…`);
        assert.doesNotMatch(everything, /authorization|bearer|cookie|repo:acme\/private/i);
      } finally {
        await Promise.all([issuer.close(), sts.close()]);
      }
    });

    test("AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED set by the operator: the broker leaves the SDK's notice to it and logs none", async () => {
      const cwd = path.join(dir, 'sdk-switch');
      await mkdir(path.join(cwd, 'policies'), { recursive: true });
      // No exchange is made: the endpoint only has to be a loopback URL.
      await writeFile(path.join(cwd, 'broker.yaml'), 'server: { host: 127.0.0.1, port: 0 }\nproviders:\n  aws: { region: eu-west-1, endpoint: "http://127.0.0.1:9" }\n');
      const broker = spawnCli(['serve'], { cwd, env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' } });
      await waitForOutput(broker, logLine('listening'));
      broker.child.kill('SIGTERM');
      assert.equal(await broker.exited, 0);
      const lines = jsonLines(broker.stdout());
      assert.ok(lines.some((line) => line.msg === 'stopped'));
      assert.deepEqual(lines.filter((line) => line.msg === SDK_NOTICE), []);
      assert.equal(broker.stderr(), '');
    });

    test('LOG_LEVEL=Info: no debug lines (no probe lines), the other access lines', async () => {
      const cwd = path.join(dir, 'info');
      await mkdir(path.join(cwd, 'policies'), { recursive: true });
      const broker = spawnCli(['serve'], { cwd, env: { LOG_LEVEL: 'Info', PORT: '0' } });
      const { url } = (await waitForOutput(broker, logLine('listening'))) as { url: string };
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
      const missing = await fetch(`${url}/nothing`);
      // Requests are answered in order: once the 404's line is out, the probe's would be too.
      const line = await accessLineOf(broker, missing.headers.get('x-request-id')!);
      assert.deepEqual([line.route, line.status, line.level], [null, 404, 'info']);
      broker.child.kill('SIGTERM');
      assert.equal(await broker.exited, 0);
      const lines = jsonLines(broker.stdout());
      assert.deepEqual(lines.filter((l) => l.level === 'debug'), []);
      assert.deepEqual(lines.filter((l) => l.msg === 'request').map((l) => l.route), [null]);
      assert.equal(broker.stderr(), '');
    });
  });
});
