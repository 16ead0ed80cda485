/**
 * `tocfs config show [--json]`: the effective settings and where each came from (flag,
 * environment, config file or default). The text form is itself a valid config file.
 */
import type { Argv, CommandModule } from 'yargs';
import { type ConfigValues, describeOrigin, envName, type LoadedConfig, type Origin, SETTING_KEYS, setting, settingOption, type SettingKey } from '../../config/index.js';
import { renderConfigReference, renderExampleConfig } from '../../config/reference.js';
import { withExamples } from '../help.js';

interface ShowArgs {
  json: boolean;
  config: LoadedConfig;
}

export interface ConfigShowJson {
  /** The config file read, or null when none was found. */
  file: string | null;
  settings: Record<SettingKey, { value: unknown; text: string; origin: Origin['source']; from: string; env: string; flag: string | null }>;
}

function tomlValue(key: SettingKey, value: unknown): string {
  const s = setting(key);
  if (s.kind === 'boolean' || s.kind === 'integer') return String(value);
  return JSON.stringify(s.format(value));
}

/** The effective settings as a commented TOML document. */
export function renderConfigToml(cfg: LoadedConfig): string {
  const lines = ['# tocfs effective configuration: value, then where it came from.', `# config file: ${cfg.file ?? 'none found'}`];
  let section = '';
  const rows = SETTING_KEYS.map((key) => {
    const [sec, name] = key.split('.') as [string, string];
    return { key, sec, assign: `${name} = ${tomlValue(key, cfg.values[key])}` };
  });
  const width = Math.max(...rows.map((r) => r.assign.length));
  for (const r of rows) {
    if (r.sec !== section) {
      lines.push('', `[${r.sec}]`);
      section = r.sec;
    }
    lines.push(`${r.assign.padEnd(width)}  # ${describeOrigin(cfg.origins[r.key])}`);
  }
  return `${lines.join('\n')}\n`;
}

export function configShowJson(cfg: LoadedConfig): ConfigShowJson {
  const settings = {} as ConfigShowJson['settings'];
  for (const key of SETTING_KEYS) {
    const s = setting(key);
    const value = (cfg.values as ConfigValues)[key];
    settings[key] = { value, text: s.format(value), origin: cfg.origins[key].source, from: describeOrigin(cfg.origins[key]), env: envName(key), flag: s.flag ? `--${s.flag}` : null };
  }
  return { file: cfg.file, settings };
}

const showCommand: CommandModule<object, ShowArgs> = {
  command: 'show',
  describe: 'Print the effective settings and where each came from',
  builder: (y) => {
    let out = y.option('json', { type: 'boolean', default: false, describe: 'Print JSON: each key with value, text, origin, env name and flag' }) as unknown as Argv<ShowArgs>;
    // Every setting's flag, so `config show --cache-dir X` previews what a command would use.
    for (const key of SETTING_KEYS) {
      const flag = setting(key).flag;
      if (flag && flag !== 'log-level') out = out.option(flag, settingOption(key));
    }
    return withExamples(out, [
      ['$0 config show', 'Effective settings as a commented config file'],
      ['$0 config show --json | jq -r ".settings[\\"cache.dir\\"].value"', 'One value, for scripts'],
      ['TOCFS_CACHE_MAX_SIZE=20G $0 config show', 'Check that an environment variable takes effect'],
      ['$0 --config ./test.toml config show', 'Validate a config file before installing it'],
    ]);
  },
  handler: (argv) => {
    process.stdout.write(argv.json ? `${JSON.stringify(configShowJson(argv.config), null, 2)}\n` : renderConfigToml(argv.config));
  },
};

const referenceCommand: CommandModule = {
  command: 'reference',
  describe: 'Print the settings reference (Markdown)',
  builder: (y) => withExamples(y, [['$0 config reference', 'The configuration reference (the section embedded in docs/guide.md)']]),
  handler: () => {
    process.stdout.write(renderConfigReference());
  },
};

const exampleCommand: CommandModule = {
  command: 'example',
  describe: 'Print a config file with every setting commented out at its default',
  builder: (y) => withExamples(y, [['$0 config example > /etc/tocfs/config.toml', 'Install a documented starting point']]),
  handler: () => {
    process.stdout.write(renderExampleConfig());
  },
};

export const configCommand: CommandModule = {
  command: 'config <command>',
  describe: 'Show the effective configuration and the settings reference',
  builder: (y) =>
    withExamples(y.command(showCommand).command(referenceCommand).command(exampleCommand).demandCommand(1, 'Name a config command: show, reference or example'), [
      ['$0 config show', 'Effective settings and where each came from'],
      ['$0 config show --json', 'The same as JSON'],
      ['$0 config reference', 'Every setting with its type, default, environment variable and flag'],
      ['$0 config example', 'A commented config file to start from'],
    ]),
  handler: () => {},
};
