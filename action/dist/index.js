// action/src/runner.ts
import { randomUUID } from "node:crypto";
import { appendFileSync } from "node:fs";
import { EOL } from "node:os";
function getInput(name, env = process.env) {
  return (env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] ?? "").trim();
}
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
function logError(message) {
  process.stdout.write(`::error::${escapeData(message)}${EOL}`);
}
function escapeData(value) {
  return value.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}
function toFileCommand(name, value) {
  const delimiter = `ghadelimiter_${randomUUID()}`;
  if (name.includes(delimiter) || value.includes(delimiter)) throw new Error(`Unexpected input: the value of ${name} contains the delimiter.`);
  if (/[\r\n]/.test(name) || name.includes("<<")) throw new Error(`Invalid variable name ${JSON.stringify(name)}.`);
  return `${name}<<${delimiter}${EOL}${value}${EOL}${delimiter}${EOL}`;
}
function setOutput(name, value, env = process.env) {
  appendFileCommand("GITHUB_OUTPUT", name, value, env);
}
function exportVariable(name, value, env = process.env) {
  appendFileCommand("GITHUB_ENV", name, value, env);
}
function saveState(name, value, env = process.env) {
  appendFileCommand("GITHUB_STATE", name, value, env);
}
function appendFileCommand(fileVariable, name, value, env) {
  const file = env[fileVariable];
  if (!file) throw new Error(`${fileVariable} is not set: this must run as a GitHub Actions step.`);
  appendFileSync(file, toFileCommand(name, value), "utf8");
}

// action/src/exchange.ts
var ActionError = class extends Error {
  constructor(message, retryable) {
    super(message);
    this.retryable = retryable;
  }
  retryable;
};
var MAX_ATTEMPTS = 3;
function backoffMs(attempt, env) {
  const base = Number(env.OIDC_BROKER_ACTION_RETRY_BASE_MS ?? "1000");
  return (Number.isFinite(base) && base >= 0 ? base : 1e3) * 2 ** (attempt - 1);
}
async function exchangeWithRetry(inputs, env = process.env) {
  for (let attempt = 1; ; attempt++) {
    try {
      const idToken = await fetchIdToken(inputs.audience, env);
      return await exchange(inputs, idToken);
    } catch (err) {
      const error = err instanceof ActionError ? err : new ActionError(`Unexpected error: ${String(err)}`, false);
      if (!error.retryable || attempt >= MAX_ATTEMPTS) throw error;
      const delayMs = backoffMs(attempt, env);
      info(`Attempt ${attempt} of ${MAX_ATTEMPTS} failed: ${error.message} Retrying in ${delayMs} ms with a fresh ID token.`);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}
async function fetchIdToken(audience, env) {
  const requestUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    throw new ActionError(
      "The job has no ID token to exchange (ACTIONS_ID_TOKEN_REQUEST_URL/ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set): this job needs `permissions: id-token: write`. Add it to the job or the workflow. Pull requests from forks never get one.",
      false
    );
  }
  addMask(requestToken);
  let response;
  try {
    response = await fetch(`${requestUrl}&audience=${encodeURIComponent(audience)}`, {
      headers: { authorization: `Bearer ${requestToken}`, accept: "application/json" }
    });
  } catch (err) {
    throw new ActionError(`Could not reach the runner's ID token service: ${describeCause(err)}.`, true);
  }
  const text = await response.text().catch(() => "");
  if (!response.ok) {
    throw new ActionError(`The runner's ID token service answered HTTP ${response.status}.`, isRetryableStatus(response.status));
  }
  const value = parseJson(text)?.value;
  if (typeof value !== "string" || value === "") throw new ActionError("The runner's ID token service returned no token.", true);
  addMask(value);
  return value;
}
async function exchange(inputs, idToken) {
  const body = { policy: inputs.policy };
  if (inputs.durationSeconds !== void 0) body.duration_seconds = inputs.durationSeconds;
  let response;
  try {
    response = await fetch(`${inputs.brokerUrl.replace(/\/+$/, "")}/v1/exchange`, {
      method: "POST",
      headers: { authorization: `Bearer ${idToken}`, "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body)
    });
  } catch (err) {
    throw new ActionError(`Could not reach the broker at ${inputs.brokerUrl}: ${describeCause(err)}.`, true);
  }
  const text = await response.text().catch(() => "");
  const json = parseJson(text);
  if (response.ok) {
    const credentials = json?.credentials;
    if (!json || typeof json.issuance_id !== "string" || typeof json.expires_at !== "string" || !isStringRecord(credentials)) {
      if (isStringRecord(credentials)) maskSecrets(credentials);
      throw new ActionError(`The broker answered HTTP ${response.status} without an exchange response.`, false);
    }
    maskSecrets(credentials);
    return json;
  }
  throw toActionError(response.status, json, inputs);
}
var NOT_SECRET = /* @__PURE__ */ new Set(["token_type", "expires_at", "Expiration"]);
function maskSecrets(credentials) {
  for (const [name, value] of Object.entries(credentials)) if (!NOT_SECRET.has(name)) addMask(value);
}
function toActionError(status, json, inputs) {
  const code = typeof json?.error === "string" ? json.error : void 0;
  const description = typeof json?.error_description === "string" ? json.error_description : "";
  const requestId = typeof json?.request_id === "string" ? ` (broker request id ${json.request_id})` : "";
  const said = description ? `: ${description}` : ".";
  const policy = JSON.stringify(inputs.policy);
  if (status === 429 || status >= 500) {
    return new ActionError(`The broker answered HTTP ${status}${code ? ` ${code}` : ""}${said}${requestId}`, true);
  }
  if (status === 401 || code === "invalid_token") {
    if (/audience/i.test(description)) {
      return new ActionError(
        `The broker does not accept the ID token's audience ${JSON.stringify(inputs.audience)}: the audience input must be one of the broker's accepted audiences (default: broker-url)${said}${requestId}`,
        false
      );
    }
    return new ActionError(`The broker refused the job's ID token${said}${requestId}`, false);
  }
  if (status === 403 || code === "access_denied") {
    return new ActionError(`Policy ${policy} denied this job${said}${requestId}`, false);
  }
  if (status === 404 || code === "unknown_policy") {
    return new ActionError(`The broker has no policy ${policy}: check the policy input${said}${requestId}`, false);
  }
  if (status === 409 || code === "token_replayed") {
    return new ActionError(
      `The broker had already seen this ID token (token_replayed): each exchange needs a fresh ID token; re-run the step${said}${requestId}`,
      false
    );
  }
  if (code === "invalid_request") {
    return new ActionError(`The broker refused the request (check the duration-seconds and policy inputs)${said}${requestId}`, false);
  }
  return new ActionError(`The broker answered HTTP ${status}${code ? ` ${code}` : ""}${said}${requestId}`, false);
}
function isRetryableStatus(status) {
  return status === 429 || status >= 500;
}
function parseJson(text) {
  try {
    const value = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? value : void 0;
  } catch {
    return void 0;
  }
}
function isStringRecord(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === "string");
}
function describeCause(err) {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  return cause instanceof Error ? cause.message : String(cause);
}

// action/src/revoke.ts
var STATE = { token: "github-token", apiUrl: "github-api-url", expiresAt: "github-token-expires-at" };
var DEFAULT_GITHUB_API_URL = "https://api.github.com";
var LOOPBACK_HOSTS = /* @__PURE__ */ new Set(["127.0.0.1", "[::1]", "localhost"]);
function resolveGitHubApiUrl(input, env) {
  const value = input || env.GITHUB_API_URL || DEFAULT_GITHUB_API_URL;
  const source = input ? "The github-api-url input" : "GITHUB_API_URL";
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new ActionError(`${source} ${JSON.stringify(value)} is not a URL.`, false);
  }
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "") {
    throw new ActionError(`${source} ${JSON.stringify(value)} must be a plain base URL, e.g. https://github.example.com/api/v3.`, false);
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && LOOPBACK_HOSTS.has(url.hostname))) {
    throw new ActionError(`${source} ${JSON.stringify(value)} must be an https URL: the GitHub token is sent to it to revoke it.`, false);
  }
  return value.replace(/\/+$/, "");
}

// action/src/main.ts
function toOutputs(response) {
  const c = response.credentials;
  const outputs = [
    ["issuance-id", response.issuance_id],
    ["expires-at", response.expires_at]
  ];
  const env = [];
  if (response.provider === "github" && c.token !== void 0) {
    outputs.push(["github-token", c.token]);
  } else if (c.AccessKeyId !== void 0 && c.SecretAccessKey !== void 0 && c.SessionToken !== void 0) {
    outputs.push(["aws-access-key-id", c.AccessKeyId], ["aws-secret-access-key", c.SecretAccessKey], ["aws-session-token", c.SessionToken]);
    env.push(["AWS_ACCESS_KEY_ID", c.AccessKeyId], ["AWS_SECRET_ACCESS_KEY", c.SecretAccessKey], ["AWS_SESSION_TOKEN", c.SessionToken]);
  } else if (c.access_token !== void 0) {
    outputs.push(["access-token", c.access_token]);
    if (response.provider === "gcp") env.push(["CLOUDSDK_AUTH_ACCESS_TOKEN", c.access_token], ["GOOGLE_OAUTH_ACCESS_TOKEN", c.access_token]);
    else env.push(["OIDC_BROKER_TOKEN", c.access_token]);
  } else if (c.id_token !== void 0) {
    outputs.push(["access-token", c.id_token], ["id-token", c.id_token]);
    env.push(["GOOGLE_ID_TOKEN", c.id_token]);
  } else {
    throw new ActionError("The broker returned credentials this action does not know.", false);
  }
  return { outputs, env };
}
function readInputs() {
  const brokerUrl = getInput("broker-url");
  const policy = getInput("policy");
  if (!brokerUrl) throw new ActionError("The broker-url input is required.", false);
  if (!policy) throw new ActionError("The policy input is required.", false);
  let url;
  try {
    url = new URL(brokerUrl);
  } catch {
    throw new ActionError(`The broker-url input ${JSON.stringify(brokerUrl)} is not a URL.`, false);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new ActionError("The broker-url input must be an https URL.", false);
  const duration = getInput("duration-seconds");
  if (duration !== "" && !/^[1-9][0-9]{0,8}$/.test(duration)) {
    throw new ActionError(`The duration-seconds input must be a positive whole number of seconds, not ${JSON.stringify(duration)}.`, false);
  }
  const revoke = readBooleanInput("revoke");
  return {
    brokerUrl,
    policy,
    audience: getInput("audience") || brokerUrl,
    durationSeconds: duration === "" ? void 0 : Number(duration),
    exportEnv: readBooleanInput("export-env"),
    revoke,
    // Checked before the exchange, so a bad URL fails the step before a token exists.
    githubApiUrl: revoke ? resolveGitHubApiUrl(getInput("github-api-url"), process.env) : void 0
  };
}
function readBooleanInput(name) {
  const value = getInput(name) || "true";
  if (!/^(true|false)$/i.test(value)) throw new ActionError(`The ${name} input must be true or false, not ${JSON.stringify(value)}.`, false);
  return value.toLowerCase() === "true";
}
async function run() {
  const inputs = readInputs();
  const response = await exchangeWithRetry(inputs);
  const { outputs, env } = toOutputs(response);
  const githubToken = response.provider === "github" ? response.credentials.token : void 0;
  if (githubToken !== void 0 && inputs.githubApiUrl !== void 0) {
    saveState(STATE.token, githubToken);
    saveState(STATE.apiUrl, inputs.githubApiUrl);
    saveState(STATE.expiresAt, response.expires_at);
  }
  for (const [name, value] of outputs) setOutput(name, value);
  if (inputs.exportEnv) for (const [name, value] of env) exportVariable(name, value);
  info(`Exchanged the job's ID token under policy ${JSON.stringify(inputs.policy)}: issuance ${response.issuance_id}, expires ${response.expires_at}; ${whatNext()}`);
  function whatNext() {
    if (githubToken === void 0) return inputs.exportEnv ? `exported ${env.map(([name]) => name).join(", ")}.` : "outputs only.";
    const where = "the github-token output holds the GitHub token (never exported: give it to the steps that need it, e.g. env: GH_TOKEN)";
    if (inputs.githubApiUrl === void 0) return `${where}; revoke is false, so it stays valid until it expires.`;
    return `${where}; this action's post step revokes it when the job ends.`;
  }
}
run().catch((err) => {
  logError(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
export {
  toOutputs
};
