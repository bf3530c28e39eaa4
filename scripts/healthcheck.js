#!/usr/bin/env node
// Container health check (the Dockerfile's HEALTHCHECK; docs/operations.md):
// GET /readyz on the broker's own port over loopback, with a short deadline.
// Exit 0 when it answers 200; exit 1 on anything else: a 503 (the audit store
// cannot take writes, or the broker is shutting down), no answer in time, a
// refused connection. Node only, so the image needs no curl or wget.
//
// Environment:
//   PORT                    the broker's port, as `oidc-broker serve` reads it (default 8080)
//   HEALTHCHECK_URL         an http:// URL to probe instead (a broker that does not listen on loopback)
//   HEALTHCHECK_TIMEOUT_MS  deadline for the whole answer, in milliseconds (default 2000)
/* global setTimeout */
import http from 'node:http';

const url = process.env.HEALTHCHECK_URL || `http://127.0.0.1:${process.env.PORT || '8080'}/readyz`;
const timeoutMs = Number(process.env.HEALTHCHECK_TIMEOUT_MS || 2000);

function finish(ok, why) {
  if (!ok) process.stderr.write(`healthcheck: ${url}: ${why}\n`);
  process.exit(ok ? 0 : 1);
}

// A hard deadline: a server that accepts and then trickles (or never sends) an answer fails too.
setTimeout(() => finish(false, `no complete answer within ${timeoutMs} ms`), timeoutMs).unref();

try {
  const request = http.get(url, { headers: { accept: 'application/json' } }, (res) => {
    res.resume();
    res.on('end', () => finish(res.statusCode === 200, `status ${res.statusCode}`));
    res.on('error', (err) => finish(false, err.message));
  });
  request.on('error', (err) => finish(false, err.message));
} catch (err) {
  // An invalid HEALTHCHECK_URL (or one that is not http://) throws here.
  finish(false, err instanceof Error ? err.message : String(err));
}
