import yargs from 'yargs';
import { TocfsError } from '../errors.js';
import { logger } from '../log.js';
import { commands } from './commands/index.js';

export async function main(args: string[]): Promise<void> {
  const cli = yargs(args)
    .scriptName('tocfs')
    .usage('tocfs — lazy-pulling container filesystem\n\nUsage: $0 <command> [options]')
    .option('log-level', { type: 'string', default: 'info', choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], describe: 'Log level' })
    .middleware((argv) => {
      if (argv['log-level']) process.env.TOCFS_LOG_LEVEL = String(argv['log-level']);
    })
    .demandCommand(1, 'Name a command; see tocfs --help')
    .strict()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(100, process.stdout.columns ?? 100))
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`tocfs: ${msg}\nRun tocfs --help for usage.\n`);
      process.exit(2);
    });
  for (const c of commands) cli.command(c);
  try {
    await cli.parseAsync();
  } catch (e) {
    const err = e as Error;
    if (err instanceof TocfsError) {
      process.stderr.write(`tocfs: ${err.message}\n`);
    } else {
      logger().error({ err }, 'unexpected error');
      process.stderr.write(`tocfs: unexpected error: ${err.stack ?? err.message}\n`);
    }
    process.exitCode = 1;
  }
}
