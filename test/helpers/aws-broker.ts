/**
 * A broker whose `aws` provider talks to a loopback STS emulator through the
 * real SDK, with the broker's own AWS identity taken from the environment (the
 * SDK's default chain), as in production. `close()` restores the environment.
 */
import { startStsEmulator, type StsEmulator } from '../emulators/index.js';
import { startBrokerFixture, type BrokerFixture } from './broker-fixture.js';

export interface AwsBroker {
  fx: BrokerFixture;
  sts: StsEmulator;
  close(): Promise<void>;
}

export async function startAwsBroker(options: { policies: Record<string, string>; brokerKey: { accessKeyId: string; secretAccessKey: string }; audiences?: string[] }): Promise<AwsBroker> {
  const savedEnv = { ...process.env };
  const sts = await startStsEmulator({ ...options.brokerKey, region: 'eu-west-1' });
  process.env.AWS_ACCESS_KEY_ID = options.brokerKey.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = options.brokerKey.secretAccessKey;
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
  const fx = await startBrokerFixture({ policies: options.policies, ...(options.audiences ? { audiences: options.audiences } : {}), providerConfig: `  aws:\n    region: eu-west-1\n    endpoint: ${sts.url}\n    timeout_seconds: 3\n` });
  return {
    fx,
    sts,
    async close() {
      await fx.close();
      await sts.close();
      process.env = savedEnv;
    },
  };
}
