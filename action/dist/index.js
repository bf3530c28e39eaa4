// src/client/errors.ts
var ClientError = class extends Error {
  constructor(message, retryable) {
    super(message);
    this.retryable = retryable;
  }
  retryable;
  name = "ClientError";
};
var BrokerRefusal = class extends ClientError {
  constructor(status, code, description, requestId, retryAfterSeconds) {
    super(
      `The broker answered HTTP ${status}${code ? ` ${code}` : ""}${description ? `: ${description}` : "."}${requestId ? ` (broker request id ${requestId})` : ""}`,
      isRetryableStatus(status)
    );
    this.status = status;
    this.code = code;
    this.description = description;
    this.requestId = requestId;
    this.retryAfterSeconds = retryAfterSeconds;
  }
  status;
  code;
  description;
  requestId;
  retryAfterSeconds;
  name = "BrokerRefusal";
};
function isRetryableStatus(status) {
  return status === 429 || status >= 500;
}
function describeCause(err) {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  return cause instanceof Error ? cause.message : String(cause);
}

// src/client/broker-url.ts
var LOOPBACK_HOSTS = /* @__PURE__ */ new Set(["127.0.0.1", "[::1]", "localhost"]);
var ACCEPTED_URLS = "an https:// URL (http:// only for 127.0.0.1, [::1] or localhost)";
function isSecureUrl(url) {
  return url.protocol === "https:" || url.protocol === "http:" && LOOPBACK_HOSTS.has(url.hostname);
}
function toBrokerUrl(value, what) {
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new ClientError(`${what} ${JSON.stringify(value)} is not a URL; expected ${ACCEPTED_URLS}, e.g. https://broker.example.com.`, false);
  }
  if (!isSecureUrl(url)) throw new ClientError(`${what} ${JSON.stringify(value)} must be ${ACCEPTED_URLS}: the CI token is sent to it.`, false);
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "") {
    throw new ClientError(`${what} ${JSON.stringify(value)} must be a plain base URL, e.g. https://broker.example.com.`, false);
  }
  return value.replace(/\/+$/, "");
}

// src/client/retry.ts
var DEFAULT_RETRY = { maxAttempts: 3, baseDelayMs: 1e3, maxDelayMs: 3e4 };
function retryDelayMs(attempt, retryAfterSeconds, options, random = Math.random) {
  if (retryAfterSeconds !== void 0) return Math.min(retryAfterSeconds * 1e3, options.maxDelayMs);
  const backoff = Math.min(options.baseDelayMs * 2 ** (attempt - 1), options.maxDelayMs);
  return Math.round(backoff / 2 + backoff / 2 * random());
}
var HTTP_DATE = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;
function parseRetryAfter(value, now = Date.now()) {
  const text = value?.trim() ?? "";
  if (/^\d{1,9}$/.test(text)) return Number(text);
  const date = HTTP_DATE.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(date) ? void 0 : Math.max(0, Math.ceil((date - now) / 1e3));
}

// src/client/exchange.ts
var EXCHANGE_TIMEOUT_MS = 3e4;
async function exchangeWithRetry(request, retry = DEFAULT_RETRY, events = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await exchangeOnce(request, await request.token());
    } catch (err) {
      const error = err instanceof ClientError ? err : new ClientError(`Unexpected error: ${describeCause(err)}`, false);
      if (!error.retryable || attempt >= retry.maxAttempts) throw error;
      const delayMs = retryDelayMs(attempt, error instanceof BrokerRefusal ? error.retryAfterSeconds : void 0, retry);
      events.onRetry?.(attempt, retry.maxAttempts, error, delayMs);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}
async function exchangeOnce(request, token) {
  const body = { policy: request.policy };
  if (request.durationSeconds !== void 0) body.duration_seconds = request.durationSeconds;
  const query = request.format === "json" ? "" : `?format=${request.format}`;
  let response;
  let text;
  try {
    response = await fetch(`${request.brokerUrl}/v1/exchange${query}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", accept: request.format === "env" ? "text/plain" : "application/json" },
      body: JSON.stringify(body),
      redirect: "manual",
      signal: AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)
    });
    text = await response.text();
  } catch (err) {
    throw new ClientError(`Could not reach the broker at ${request.brokerUrl}: ${describeCause(err)}.`, true);
  }
  if (response.status !== 200) throw toRefusal(response, text);
  if (request.format !== "json") return { body: text, response: void 0 };
  const json = parseObject(text);
  if (!json || typeof json.issuance_id !== "string" || typeof json.expires_at !== "string" || !isStringRecord(json.credentials)) {
    throw new ClientError(`The broker answered HTTP ${response.status} without an exchange response.`, false);
  }
  return { body: text, response: json };
}
function toRefusal(response, text) {
  const retryAfter = parseRetryAfter(response.headers.get("retry-after"));
  const json = parseObject(text);
  if (json) {
    const str = (value) => typeof value === "string" ? value : void 0;
    return new BrokerRefusal(response.status, str(json.error), str(json.error_description) ?? "", str(json.request_id), retryAfter);
  }
  const shell = /^echo '((?:[^']|'\\'')*)' >&2\n/.exec(text);
  const line = shell?.[1]?.replace(/'\\''/g, "'");
  const parts = line === void 0 ? void 0 : /^oidc-broker: ([a-z_]+): (.*) \(request ([^)]*)\)$/s.exec(line);
  if (parts) return new BrokerRefusal(response.status, parts[1], parts[2], parts[3] === "unknown" ? void 0 : parts[3], retryAfter);
  return new BrokerRefusal(response.status, void 0, "", void 0, retryAfter);
}
function parseObject(text) {
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

// src/client/token-source.ts
var MAX_TOKEN_BYTES = 16 * 1024;
var ID_TOKEN_TIMEOUT_MS = 1e4;
function tokenFromGitHubActions(audience, env) {
  return async () => {
    const { requestUrl, requestToken } = gitHubIdTokenRequest(env);
    let response;
    try {
      response = await fetch(`${requestUrl}&audience=${encodeURIComponent(audience)}`, {
        headers: { authorization: `Bearer ${requestToken}`, accept: "application/json" },
        signal: AbortSignal.timeout(ID_TOKEN_TIMEOUT_MS)
      });
    } catch (err) {
      throw new ClientError(`Could not reach the runner's ID token service: ${describeCause(err)}.`, true);
    }
    const text = await response.text().catch(() => "");
    if (!response.ok) throw new ClientError(`The runner's ID token service answered HTTP ${response.status}.`, isRetryableStatus(response.status));
    let value;
    try {
      value = JSON.parse(text)?.value;
    } catch {
      value = void 0;
    }
    if (typeof value !== "string" || value === "") throw new ClientError("The runner's ID token service returned no token.", true);
    return value;
  };
}
function gitHubIdTokenRequest(env) {
  const requestUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    throw new ClientError(
      "The job has no ID token to exchange (ACTIONS_ID_TOKEN_REQUEST_URL/ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set): this job needs `permissions: id-token: write`. Add it to the job or the workflow. Pull requests from forks never get one.",
      false
    );
  }
  return { requestUrl, requestToken };
}

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
function logWarning(message) {
  process.stdout.write(`::warning::${escapeData(message)}${EOL}`);
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
function baseDelayMs(env) {
  const base = Number(env.OIDC_BROKER_ACTION_RETRY_BASE_MS ?? DEFAULT_RETRY.baseDelayMs);
  return Number.isFinite(base) && base >= 0 ? base : DEFAULT_RETRY.baseDelayMs;
}
async function exchangeForJob(inputs, env = process.env) {
  addMask(gitHubIdTokenRequest(env).requestToken);
  const idToken = tokenFromGitHubActions(inputs.audience, env);
  try {
    const { response } = await exchangeWithRetry(
      {
        brokerUrl: inputs.brokerUrl,
        policy: inputs.policy,
        durationSeconds: inputs.durationSeconds,
        format: "json",
        token: async () => {
          const token = await idToken();
          addMask(token);
          return token;
        }
      },
      { ...DEFAULT_RETRY, maxAttempts: inputs.maxAttempts, baseDelayMs: baseDelayMs(env) },
      { onRetry: (attempt, maxAttempts, error, delayMs) => info(`Attempt ${attempt} of ${maxAttempts} failed: ${error.message} Retrying in ${delayMs} ms with a fresh ID token.`) }
    );
    maskSecrets(response.credentials);
    return response;
  } catch (err) {
    throw err instanceof BrokerRefusal ? toInputError(err, inputs) : err;
  }
}
var NOT_SECRET = /* @__PURE__ */ new Set(["token_type", "expires_at", "Expiration"]);
function maskSecrets(credentials) {
  for (const [name, value] of Object.entries(credentials)) if (!NOT_SECRET.has(name)) addMask(value);
}
function toInputError(refusal, inputs) {
  const { status, code, description } = refusal;
  if (refusal.retryable) return refusal;
  const said = description ? `: ${description}` : ".";
  const requestId = refusal.requestId ? ` (broker request id ${refusal.requestId})` : "";
  const policy = JSON.stringify(inputs.policy);
  const error = (message) => new ClientError(`${message}${said}${requestId}`, false);
  if (status === 401 || code === "invalid_token") {
    if (/audience/i.test(description)) {
      return error(
        `The broker does not accept the ID token's audience ${JSON.stringify(inputs.audience)}: the audience input must be one of the broker's accepted audiences (default: broker-url without a trailing slash)`
      );
    }
    return error("The broker refused the job's ID token");
  }
  if (status === 403 || code === "access_denied") return error(`Policy ${policy} denied this job`);
  if (status === 404 || code === "unknown_policy") return error(`The broker has no policy ${policy}: check the policy input`);
  if (status === 409 || code === "token_replayed") {
    return error("The broker had already seen this ID token (token_replayed): each exchange needs a fresh ID token; re-run the step");
  }
  if (code === "invalid_request") return error("The broker refused the request (check the duration-seconds and policy inputs)");
  return refusal;
}

// action/src/revoke.ts
var STATE = { token: "github-token", apiUrl: "github-api-url", expiresAt: "github-token-expires-at" };
var DEFAULT_GITHUB_API_URL = "https://api.github.com";
function resolveGitHubApiUrl(input, env) {
  const value = input || env.GITHUB_API_URL || DEFAULT_GITHUB_API_URL;
  const source = input ? "The github-api-url input" : "GITHUB_API_URL";
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new ClientError(`${source} ${JSON.stringify(value)} is not a URL.`, false);
  }
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "") {
    throw new ClientError(`${source} ${JSON.stringify(value)} must be a plain base URL, e.g. https://github.example.com/api/v3.`, false);
  }
  if (!isSecureUrl(url)) {
    throw new ClientError(`${source} ${JSON.stringify(value)} must be an https URL: the GitHub token is sent to it to revoke it.`, false);
  }
  return value.replace(/\/+$/, "");
}

// action/src/main.ts
function toOutputs(response) {
  const c = response.credentials;
  const outputs = [];
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
    throw new ClientError("The broker returned credentials this action does not know.", false);
  }
  return { outputs, env };
}
function readInputs() {
  const brokerUrlInput = getInput("broker-url");
  const policy = getInput("policy");
  if (!brokerUrlInput) throw new ClientError("The broker-url input is required.", false);
  if (!policy) throw new ClientError("The policy input is required.", false);
  const brokerUrl = toBrokerUrl(brokerUrlInput, "The broker-url input");
  const duration = getInput("duration-seconds");
  if (duration !== "" && !/^[1-9][0-9]{0,8}$/.test(duration)) {
    throw new ClientError(`The duration-seconds input must be a positive whole number of seconds, not ${JSON.stringify(duration)}.`, false);
  }
  const maxAttempts = getInput("retry-max-attempts") || "3";
  if (!/^([1-9]|10)$/.test(maxAttempts)) throw new ClientError(`The retry-max-attempts input must be a whole number from 1 to 10, not ${JSON.stringify(maxAttempts)}.`, false);
  const awsRegion = getInput("aws-region");
  if (awsRegion !== "" && !/^[a-z]{2}(-[a-z]+)+-[0-9]+$/.test(awsRegion)) {
    throw new ClientError(`The aws-region input must be an AWS region such as eu-west-1, not ${JSON.stringify(awsRegion)}.`, false);
  }
  const revoke = readBooleanInput("revoke", true);
  return {
    brokerUrl,
    policy,
    // The broker's accepted audience is its URL as configured, so a trailing slash typed in broker-url must not end up in `aud`.
    audience: getInput("audience") || brokerUrl,
    durationSeconds: duration === "" ? void 0 : Number(duration),
    maxAttempts: Number(maxAttempts),
    awsRegion,
    exportEnv: readBooleanInput("export-env", true),
    outputCredentials: readBooleanInput("output-credentials", false),
    revoke,
    // Checked before the exchange, so a bad URL fails the step before a token exists.
    githubApiUrl: revoke ? resolveGitHubApiUrl(getInput("github-api-url"), process.env) : void 0
  };
}
function readBooleanInput(name, fallback) {
  const value = getInput(name) || String(fallback);
  if (!/^(true|false)$/i.test(value)) throw new ClientError(`The ${name} input must be true or false, not ${JSON.stringify(value)}.`, false);
  return value.toLowerCase() === "true";
}
async function run() {
  const inputs = readInputs();
  if (inputs.awsRegion !== "") for (const name of ["AWS_REGION", "AWS_DEFAULT_REGION"]) exportVariable(name, inputs.awsRegion);
  const response = await exchangeForJob(inputs);
  const { outputs, env } = toOutputs(response);
  const githubToken = response.provider === "github" ? response.credentials.token : void 0;
  if (githubToken !== void 0 && inputs.githubApiUrl !== void 0) {
    saveState(STATE.token, githubToken);
    saveState(STATE.apiUrl, inputs.githubApiUrl);
    saveState(STATE.expiresAt, response.expires_at);
  }
  setOutput("issuance-id", response.issuance_id);
  setOutput("expires-at", response.expires_at);
  if (inputs.outputCredentials || githubToken !== void 0) for (const [name, value] of outputs) setOutput(name, value);
  if (inputs.exportEnv) for (const [name, value] of env) exportVariable(name, value);
  info(`Exchanged the job's ID token under policy ${JSON.stringify(inputs.policy)}: issuance ${response.issuance_id}, expires ${response.expires_at}; ${whatNext()}`);
  if (githubToken === void 0 && !inputs.exportEnv && !inputs.outputCredentials) {
    logWarning("export-env and output-credentials are both false: the credential was issued but no later step can use it. Set one of them to true.");
  }
  function whatNext() {
    if (githubToken === void 0) {
      const exported = inputs.exportEnv ? `exported ${env.map(([name]) => name).join(", ")}` : "exported nothing";
      return `${exported}; ${inputs.outputCredentials ? "credential outputs set" : "no credential outputs (output-credentials is false)"}.`;
    }
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
