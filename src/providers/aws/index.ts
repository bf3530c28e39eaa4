import { z } from 'zod';
import { outboundUrl, providerTimeout } from '../../config-fields.js';
import { callTimeouts, renderRefusal, type ProviderModule } from '../types.js';
import { AWS_GRANT_KEYS, compileAwsGrant, type AwsGrant } from './grant.js';
import { renderAwsSession } from './render.js';

export interface AwsProviderConfig {
  region: string | undefined;
  endpoint: string | undefined;
  timeoutSeconds: number;
}

const configSchema = z
  .strictObject({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'expected an AWS region such as us-east-1').optional(),
    endpoint: outboundUrl.optional(),
    timeout_seconds: providerTimeout,
  })
  .optional();

/**
 * AWS credentials through STS AssumeRole (docs/policies/reference.md, `aws`); the
 * broker's own identity is the SDK's default credential chain. The SDK is
 * loaded by `create` only, so the offline CLI never loads it.
 */
export const awsProvider: ProviderModule<'aws', AwsGrant, z.output<typeof configSchema>, AwsProviderConfig | undefined> = {
  name: 'aws',
  configSchema,
  toConfig: (raw) => raw && { region: raw.region, endpoint: raw.endpoint, timeoutSeconds: raw.timeout_seconds },
  grantKeys: AWS_GRANT_KEYS,
  compileGrant: compileAwsGrant,
  // The role is literal in the grant, so a failed call's record still says what was asked for.
  target: (grant) => grant.roleArn,
  checkGrant: (grant, claims) => renderRefusal(() => renderAwsSession(grant, claims)),
  credentialProcess: true,
  tokenExchange: { kind: 'multi_part', credential: 'AWS credentials (three values)' },
  async create(config, context) {
    const { createAwsProvider, logSdkNodeNotice } = await import('./issuer.js');
    logSdkNodeNotice(context.logger);
    return createAwsProvider({ region: config.region, endpoint: config.endpoint, ...callTimeouts(config.timeoutSeconds) });
  },
};
