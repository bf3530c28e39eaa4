/**
 * Loopback emulators of the cloud APIs the broker calls, for tests that drive
 * the real SDK clients: each speaks the real wire protocol, checks what it
 * receives the way the service does (AWS: the SigV4 signature and the form
 * body; GCP: the REST path, body and bearer token), records what it hands
 * out, and injects faults on demand. They import nothing of the broker, so
 * they could be published on their own (see README.md beside this file).
 */
export { startStsEmulator, type AssumeRoleParams, type IssuedCredentials, type ReceivedAssumeRole, type SessionTag, type StsEmulator, type StsEmulatorOptions, type StsErrorAnswer, type StsFault } from './aws-sts/server.js';
export { verifySigV4, type RawSignedRequest, type SigV4Expectation, type SigV4Result } from './aws-sts/sigv4.js';
export {
  CLOUD_PLATFORM_SCOPE,
  GOOGLE_HTTP_STATUS,
  startGcpEmulator,
  type GcpEmulator,
  type GcpEmulatorOptions,
  type GcpFault,
  type GoogleStatus,
  type IssuedGcpCredential,
} from './gcp-iam/server.js';
export {
  startGithubEmulator,
  type FaultTarget,
  type GithubEmulator,
  type GithubEmulatorOptions,
  type GithubFault,
  type GithubInstallation,
  type GithubTokenGrant,
  type IssuedGithubToken,
  type PermissionLevel,
  type ReceivedGithubRequest,
} from './github/server.js';
