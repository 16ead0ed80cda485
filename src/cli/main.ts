import { defaultConfigPath, flagsFromArgs, loadConfig, setCurrentConfig, settingOption } from '../config/index.js';
import { TocfsError } from '../errors.js';
import { configureLogging, logFd, logger } from '../log.js';
import type { CommandModule } from 'yargs';
import { withExamples } from './help.js';
import { readFileSync } from 'node:fs';
import { helpWidth, yargs } from './yargs.js';

/** tocfs's own version: yargs' CommonJS build would look for a package.json from the working directory. */
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/**
 * The module of each command by its name (and alias), so that a command line naming one loads
 * only that command's imports: `tocfs mount`, which only starts the daemon, stays quick. Anything
 * else (help, a typo) loads them all (commands/index.ts).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyCommand = CommandModule<any, any>;
export const COMMAND_LOADERS: Readonly<Record<string, () => Promise<AnyCommand>>> = {
  cache: async () => (await import('./commands/cache.js')).cacheCommand,
  config: async () => (await import('./commands/config.js')).configCommand,
  convert: async () => (await import('./commands/convert.js')).convertCommand,
  index: async () => (await import('./commands/index-layers.js')).indexCommand,
  inspect: async () => (await import('./commands/inspect.js')).inspectCommand,
  ls: async () => (await import('./commands/ls.js')).lsCommand,
  cat: async () => (await import('./commands/cat.js')).catCommand,
  mount: async () => (await import('./commands/mount.js')).mountCommand,
  unmount: async () => (await import('./commands/unmount.js')).unmountCommand,
  umount: async () => (await import('./commands/unmount.js')).unmountCommand,
  store: async () => (await import('./commands/store.js')).storeCommand,
  profile: async () => (await import('./commands/profile.js')).profileCommand,
};

/** The commands a command line needs registered: the one it names, or all of them. */
async function commandsFor(args: string[]): Promise<AnyCommand[]> {
  const name = args[0];
  const load = name !== undefined && Object.hasOwn(COMMAND_LOADERS, name) ? COMMAND_LOADERS[name] : undefined;
  return load ? [await load()] : (await import('./commands/index.js')).commands;
}

// Lines of at most 78 columns: nothing in it wraps at the usual 80.
const EPILOGUE = `Configuration:
  Settings come from, highest precedence first: command-line flags,
  TOCFS_<SECTION>_<KEY> environment variables, the config file, built-in
  defaults. 'tocfs config show' prints every setting with where it came from;
  docs/guide.md lists them all. Relative paths are taken from the working
  directory (in the config file: from the file's directory).

Files:
  ${defaultConfigPath(true)}          config file when run as root
  ~/.config/tocfs/config.toml     config file otherwise ($XDG_CONFIG_HOME/tocfs)

Environment:
  TOCFS_CONFIG        config file to read instead (like --config)
  TOCFS_LOG_LEVEL     like --log-level; any setting has its TOCFS_* variable

Output:
  Command output goes to stdout; logs go to stderr (JSON lines, pretty on a
  terminal). The daemons, tocfs mount --foreground and tocfs store
  --foreground (as systemd runs them), have no other output and log to stdout.

Exit status:
  0 success, 1 failure (the message says what and why), 2 bad usage.`;

export async function main(args: string[]): Promise<void> {
  const cli = yargs(args)
    .scriptName('tocfs')
    .usage('tocfs — lazy-pulling container filesystem\n\nUsage: $0 <command> [options]')
    .option('config', { type: 'string', describe: 'Config file to read (must exist) instead of the default one [env TOCFS_CONFIG]', defaultDescription: `${defaultConfigPath(true)} as root, else ~/.config/tocfs/config.toml`, global: true, requiresArg: true })
    .option('log-level', { ...settingOption('log.level'), global: true })
    .middleware((argv) => {
      const config = loadConfig({ argv: flagsFromArgs(args), env: process.env });
      setCurrentConfig(config);
      configureLogging({ level: config.values['log.level'], format: config.values['log.format'], fd: logFd(argv) });
      for (const warning of config.warnings) logger().warn(warning);
      (argv as Record<string, unknown>).config = config;
    })
    .demandCommand(1, 'Name a command; see tocfs --help')
    .strict()
    .help()
    .alias('h', 'help')
    .version(VERSION)
    .wrap(helpWidth())
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`tocfs: ${msg}\nRun tocfs --help for usage.\n`);
      process.exit(2);
    });
  withExamples(
    cli,
    [
      ['$0 inspect docker://quay.io/podman/hello', 'Which layers of an image can be pulled lazily'],
      ['$0 config show', 'Print the effective settings and where each came from'],
      ['$0 <command> --help', 'Options and examples of one command'],
    ],
    EPILOGUE,
  );
  for (const c of await commandsFor(args)) cli.command(c);
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
