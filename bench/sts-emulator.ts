// The loopback AWS STS emulator (test/emulators/aws-sts) in a process of its
// own for the load benchmarks, so its work is not counted in the load
// generator's process. It logs the `"msg":"listening"` line bench/harness.ts
// waits for. The access key comes from the environment the broker also gets.
import { startStsEmulator } from '../test/emulators/index.js';

const RECORD_TRIM_MS = 1000;

const sts = await startStsEmulator({ accessKeyId: process.env.AWS_ACCESS_KEY_ID!, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY!, region: 'us-east-1' });
// The emulator records every call for tests to inspect; a benchmark never
// reads them, and keeping them would grow this process for the whole run.
setInterval(() => sts.requests.splice(0), RECORD_TRIM_MS).unref();
process.stdout.write(`${JSON.stringify({ msg: 'listening', url: sts.url })}\n`);
process.once('SIGTERM', () => void sts.close().then(() => process.exit(0)));
