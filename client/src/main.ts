/**
 * `oidc-broker-exchange`: the `exchange` command alone, as one file that needs
 * only Node.js 20+ (docs/ci/exchange.md#the-single-file-bundle). Bundled to
 * client/dist/oidc-broker-exchange.cjs by `npm run build:client`: CommonJS, so it
 * runs wherever it is copied, whatever `type` a package.json nearby declares.
 */
import { Command } from 'commander';
import packageJson from '../../package.json' with { type: 'json' };
import { registerExchangeCommand } from '../../src/cli/exchange.js';
import { PROCESS_IO } from '../../src/cli/process-io.js';
import { runProgram } from '../../src/cli/run.js';
import { addVersion } from '../../src/cli/version.js';

const program = new Command('oidc-broker-exchange')
  .exitOverride()
  .configureOutput({ writeOut: (text) => process.stdout.write(text), writeErr: (text) => process.stderr.write(text) });
registerExchangeCommand(program, PROCESS_IO);
// The version is bundled in: the file is copied alone, without the package.json beside it.
addVersion(program, packageJson.version);

void runProgram(program, ['node', 'oidc-broker-exchange', 'exchange', ...process.argv.slice(2)], PROCESS_IO).then((code) => {
  process.exitCode = code;
});
