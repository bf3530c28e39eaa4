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

/**
 * The broker's own deadline on a whole exchange (docs/configuration.md,
 * `server.exchange_timeout_seconds`): above the providers' default call
 * timeout, so a provider's own 502 comes first when it works as configured,
 * and below the HTTP server's 60 s request timeout, so the caller always gets
 * the broker's answer.
 */
export const exchangeTimeout = z.number().int().min(1).max(55).default(30);

/** A whole provider call, retries included: what a CI job waits at most before a 502. */
export const providerTimeout = z.number().int().min(1).max(60).default(25);
