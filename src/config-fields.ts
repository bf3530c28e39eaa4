import { z } from 'zod';
import { isAllowedOutboundUrl } from './oidc/url-policy.js';

/**
 * Config field schemas that both `config.ts` and the provider modules'
 * `providers.<name>` sections use (docs/configuration.md).
 */

/** An `http://` URL is accepted only for loopback hosts (docs/configuration.md). */
export const outboundUrl = z
  .string()
  .url('expected a URL')
  .refine(isAllowedOutboundUrl, 'expected an https:// URL (http:// is accepted only for loopback hosts)');

/** A whole provider call, retries included: what a CI job waits at most before a 502. */
export const providerTimeout = z.number().int().min(1).max(60).default(25);
