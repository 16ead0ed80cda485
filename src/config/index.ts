/**
 * tocfs configuration. Commands get the effective settings as `argv.config` (set by the CLI's
 * middleware) or from `currentConfig()`; library code takes plain options and never reads
 * this module's state itself.
 */
import type { Options } from 'yargs';
import { type LoadedConfig, loadConfig } from './load.js';
import { defaultText, envName, setting, type SettingKey } from './schema.js';

export { absolutePathEnv, ConfigError, defaultConfigPath, describeOrigin, flagsFromArgs, loadConfig, type LoadedConfig, type LoadOptions, type Origin } from './load.js';
export { type ConfigValues, defaultText, envName, LOG_LEVELS, SETTING_KEYS, SETTINGS, setting, type SettingKey } from './schema.js';
export { formatDuration, formatSize, humanBytes, parseAddress, parseDuration, parseSize } from '../units.js';
export { metricsAddressFor, STORE_METRICS_ADDRESS } from './metrics-address.js';

let current: LoadedConfig | undefined;

/** The effective configuration of this process: what the CLI loaded, else environment + file + defaults (no flags). */
export function currentConfig(): LoadedConfig {
  current ??= loadConfig();
  return current;
}

export function setCurrentConfig(c: LoadedConfig): void {
  current = c;
}

/**
 * A yargs option for a setting's flag: type, description with the config key, env variable
 * and default, and no yargs default, so an absent flag leaves the config file or environment
 * in charge. Use: `.option('cache-dir', settingOption('cache.dir'))`, then read
 * `argv.config.values['cache.dir']`.
 */
export function settingOption(key: SettingKey): Options {
  const s = setting(key);
  return {
    type: s.kind === 'boolean' ? 'boolean' : 'string',
    ...(s.values ? { choices: [...s.values] } : {}),
    describe: `${s.description} [config ${key}, env ${envName(key)}]`,
    defaultDescription: defaultText(key),
  };
}
