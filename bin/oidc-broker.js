#!/usr/bin/env node
// The compiled CLI; `npm ci` builds it (the `prepare` script), `npm start` rebuilds it.
import { runCli } from '../dist/cli/index.js';

process.exitCode = await runCli(process.argv);
