// src/client/errors.ts
function describeCause(err) {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  return cause instanceof Error ? cause.message : String(cause);
}

// action/src/revoke.ts
var STATE = { token: "github-token", apiUrl: "github-api-url", expiresAt: "github-token-expires-at" };
var REVOKE_TIMEOUT_MS = 1e4;
async function revokeGitHubToken(apiUrl, token, timeoutMs = REVOKE_TIMEOUT_MS) {
  try {
    const response = await fetch(`${apiUrl}/installation/token`, {
      method: "DELETE",
      headers: {
        authorization: `Bearer ${token}`,
        accept: "application/vnd.github+json",
        "x-github-api-version": "2022-11-28",
        "user-agent": "oidc-broker-action"
      },
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs)
    });
    await response.body?.cancel();
    return response.status === 204 ? { kind: "revoked" } : { kind: "refused", status: response.status };
  } catch (err) {
    return { kind: "unreachable", cause: describeCause(err) };
  }
}

// action/src/runner.ts
import { EOL } from "node:os";
function addMask(value) {
  if (value === "") return;
  const lines = value.split(/\r?\n/).filter((line) => line.trim() !== "");
  for (const part of /* @__PURE__ */ new Set([value, ...lines])) {
    if (!/[\r\n]/.test(part)) process.stdout.write(`::add-mask::${escapeData(part)}${EOL}`);
  }
}
function info(message) {
  process.stdout.write(`${message}${EOL}`);
}
function logWarning(message) {
  process.stdout.write(`::warning::${escapeData(message)}${EOL}`);
}
function escapeData(value) {
  return value.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}
function getState(name, env = process.env) {
  return env[`STATE_${name}`] ?? "";
}

// action/src/post.ts
async function run() {
  const token = getState(STATE.token);
  if (token === "") return;
  addMask(token);
  const apiUrl = getState(STATE.apiUrl);
  const expiresAt = getState(STATE.expiresAt);
  const outcome = await revokeGitHubToken(apiUrl, token);
  switch (outcome.kind) {
    case "revoked":
      info(`Revoked the GitHub token at ${apiUrl}: it no longer works.`);
      return;
    case "refused":
      if (outcome.status === 401) {
        logWarning(`Did not revoke the GitHub token: ${apiUrl} answered HTTP 401, so it had already expired or been revoked.`);
      } else {
        logWarning(`Could not revoke the GitHub token: ${apiUrl}/installation/token answered HTTP ${outcome.status}. It stays valid until ${expiresAt}.`);
      }
      return;
    case "unreachable":
      logWarning(`Could not reach ${apiUrl} to revoke the GitHub token (${outcome.cause}). It stays valid until ${expiresAt}.`);
      return;
  }
}
run().catch((err) => {
  logWarning(`Could not revoke the GitHub token: ${err instanceof Error ? err.message : String(err)}`);
});
