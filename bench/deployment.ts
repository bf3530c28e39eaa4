/**
 * The deployment the load benchmarks (run.ts, soak.ts) start: a broker with
 * production settings (SQLite audit, which fails closed; memory replay; the
 * `jwt` and `aws` providers, AWS through the loopback STS emulator), its
 * config, policies for GitHub Actions-shaped tokens (bench/tokens.ts) and its
 * environment.
 */
import path from 'node:path';
import { OWNER_ID } from './tokens.js';

export const AUDIENCE = 'http://127.0.0.1:8080';
/** The broker's own AWS identity, known only to the loopback STS emulator (bench/sts-emulator.ts reads it from its environment). */
export const STS_ENV = { AWS_ACCESS_KEY_ID: 'AKIABENCHBROKER00001', AWS_SECRET_ACCESS_KEY: 'bench-secret-known-only-to-the-loopback-emulator' };

export type Provider = 'jwt' | 'aws';
export type Replay = 'on' | 'off';

function grantYaml(provider: Provider): string {
  if (provider === 'jwt') return ['grant:', '  provider: jwt', '  audience: https://deploy.example.com', '  claims:', '    repo: ${repository}', '    run: ${run_id}'].join('\n');
  return [
    'grant:',
    '  provider: aws',
    '  role_arn: arn:aws:iam::123456789012:role/deploy',
    '  max_duration_seconds: 900',
    '  session_name: ci-${run_id}',
    '  source_identity: ${actor}',
    '  session_tags:',
    '    repository: ${repository}',
    '    ref: ${ref}',
    '  session_policy:',
    '    Version: "2012-10-17"',
    '    Statement:',
    '      - Effect: Allow',
    '        Action: ["s3:PutObject"]',
    '        Resource: ["arn:aws:s3:::artifacts/${repository}/*"]',
  ].join('\n');
}

/** What a deployment for GitHub Actions would write: owner, repositories, branches, events and the reusable workflow. */
export function policyYaml(provider: Provider, replay: Replay): string {
  return [
    'issuer: github',
    ...(replay === 'off' ? ['allow_token_reuse: true'] : []),
    'claims:',
    `  repository_owner_id: "${OWNER_ID}"`,
    '  repository_owner: acme',
    '  repository: { glob: "acme/*" }',
    '  ref: [refs/heads/main, refs/heads/release]',
    '  event_name: { in: [push, workflow_dispatch] }',
    '  sub: { glob: "repo:acme/*:ref:refs/heads/**" }',
    '  job_workflow_ref: { glob: "acme/*/.github/workflows/deploy.yml@refs/heads/main" }',
    grantYaml(provider),
    '',
  ].join('\n');
}

export const DENY_PULL_REQUEST_TARGET = 'issuer: github\neffect: deny\nclaims:\n  event_name: pull_request_target\n';

/** Production settings; only `exchanges_per_subject` is raised (from 60 a minute), since the load sends thousands a minute per repository. */
export function brokerConfig(issuerUrl: string, stsUrl: string): string {
  return [
    `server: { host: 127.0.0.1, port: 0, public_url: ${AUDIENCE} }`,
    'issuers:',
    `  - { name: github, issuer: ${issuerUrl}, audiences: [${AUDIENCE}], algorithms: [RS256] }`,
    'policies: { dir: ./policies }',
    'audit: { url: "sqlite:./data/audit.db" }',
    'replay: { url: "memory:" }',
    'providers:',
    '  jwt: { signing_key_file: ./data/signing-key.jwk }',
    `  aws: { region: us-east-1, endpoint: ${stsUrl}, timeout_seconds: 5 }`,
    'limits: { exchanges_per_subject: 1000000 }',
    '',
  ].join('\n');
}

/** The broker's environment: log level, and its AWS identity from the environment only (no profile or instance metadata). */
export function brokerEnv(dir: string): NodeJS.ProcessEnv {
  return {
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
    ...STS_ENV,
    AWS_SESSION_TOKEN: undefined,
    AWS_PROFILE: undefined,
    AWS_CONFIG_FILE: path.join(dir, 'aws-config-none'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'aws-credentials-none'),
    AWS_EC2_METADATA_DISABLED: 'true',
  };
}
