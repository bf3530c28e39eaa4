// The CLI entry point run from source (node --import tsx test/helpers/cli-main.ts <args>), for tests that need a real process.
import { runCli } from '../../src/cli/index.js';

process.exitCode = await runCli(process.argv);
