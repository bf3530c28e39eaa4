/**
 * The GitHub Actions runner protocol, without @actions/core: inputs come from
 * `INPUT_<NAME>` variables, outputs, exported variables and saved state go to
 * the files named by `GITHUB_OUTPUT`, `GITHUB_ENV` and `GITHUB_STATE`, commands
 * go to stdout. The runner hands saved state to the post step as `STATE_<name>`.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { EOL } from 'node:os';

/** An input as the runner passes it: `INPUT_` + the name uppercased, spaces as `_`, dashes kept; trimmed, `''` when unset. */
export function getInput(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return (env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] ?? '').trim();
}

/**
 * Tells the runner to replace `value` with `***` in the log from now on. Each
 * line is masked too, since the runner masks line by line.
 */
export function addMask(value: string): void {
  if (value === '') return;
  const lines = value.split(/\r?\n/).filter((line) => line.trim() !== '');
  for (const part of new Set([value, ...lines])) {
    if (!/[\r\n]/.test(part)) process.stdout.write(`::add-mask::${escapeData(part)}${EOL}`);
  }
}

export function info(message: string): void {
  process.stdout.write(`${message}${EOL}`);
}

export function logError(message: string): void {
  process.stdout.write(`::error::${escapeData(message)}${EOL}`);
}

export function logWarning(message: string): void {
  process.stdout.write(`::warning::${escapeData(message)}${EOL}`);
}

/** Workflow-command data escaping, as the runner expects it (`%`, CR and LF). */
export function escapeData(value: string): string {
  return value.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/**
 * `name<<DELIMITER\nvalue\nDELIMITER\n`, the multi-line file format. The
 * delimiter is random, so a value holding newlines cannot close the block
 * early and define another variable.
 */
export function toFileCommand(name: string, value: string): string {
  const delimiter = `ghadelimiter_${randomUUID()}`;
  if (name.includes(delimiter) || value.includes(delimiter)) throw new Error(`Unexpected input: the value of ${name} contains the delimiter.`);
  if (/[\r\n]/.test(name) || name.includes('<<')) throw new Error(`Invalid variable name ${JSON.stringify(name)}.`);
  return `${name}<<${delimiter}${EOL}${value}${EOL}${delimiter}${EOL}`;
}

export function setOutput(name: string, value: string, env: NodeJS.ProcessEnv = process.env): void {
  appendFileCommand('GITHUB_OUTPUT', name, value, env);
}

export function exportVariable(name: string, value: string, env: NodeJS.ProcessEnv = process.env): void {
  appendFileCommand('GITHUB_ENV', name, value, env);
}

/** Keeps `value` for this action's post step, which reads it with `getState`; the runner keeps the state file, never the log. */
export function saveState(name: string, value: string, env: NodeJS.ProcessEnv = process.env): void {
  appendFileCommand('GITHUB_STATE', name, value, env);
}

/** What the main step saved under `name`; `''` when it saved nothing. */
export function getState(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return env[`STATE_${name}`] ?? '';
}

function appendFileCommand(fileVariable: 'GITHUB_OUTPUT' | 'GITHUB_ENV' | 'GITHUB_STATE', name: string, value: string, env: NodeJS.ProcessEnv): void {
  const file = env[fileVariable];
  if (!file) throw new Error(`${fileVariable} is not set: this must run as a GitHub Actions step.`);
  appendFileSync(file, toFileCommand(name, value), 'utf8');
}
