import type { Command } from 'commander';
import { ConfigError, loadConfig, resolveConfigPath } from '../config.js';
import { compileContext, formatPolicyIssue } from '../main.js';
import { compilePolicies } from '../policy/compile.js';
import { loadPolicyDir } from '../policy/load.js';

export function registerPolicyCommands(program: Command): void {
  const policy = program.command('policy').description('Work with trust policies offline.');
  policy
    .command('validate')
    .argument('[dir]', 'policy directory (default: the configured policies.dir)')
    .option('-c, --config <file>', 'config file naming the issuers and providers policies may use')
    .description('Compile every policy with the server\'s compiler; exit 1 with file:line errors.')
    .action(async (dir: string | undefined, options: { config?: string }) => {
      let config;
      try {
        config = await loadConfig(resolveConfigPath(options.config));
      } catch (err) {
        if (err instanceof ConfigError) throw new Error(`cannot load the config:\n${err.message}`);
        throw err;
      }
      const files = await loadPolicyDir(dir ?? config.policies.dir);
      const result = compilePolicies(files, compileContext(config));
      if (!result.ok) {
        process.stderr.write(`${result.issues.map(formatPolicyIssue).join('\n')}\n`);
        process.stderr.write(`${result.issues.length} problem${result.issues.length === 1 ? '' : 's'} in ${files.length} file${files.length === 1 ? '' : 's'}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`ok: ${result.set.size} polic${result.set.size === 1 ? 'y' : 'ies'} in ${files.length} file${files.length === 1 ? '' : 's'}\n`);
    });
}
