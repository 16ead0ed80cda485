/**
 * The effective configuration: flags > TOCFS_* environment > config file > defaults, each value
 * validated by its schema entry and remembered with where it came from.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { Parser } from 'yargs/helpers';
import { TocfsError } from '../errors.js';
import { type ConfigValues, type DefaultContext, defaultValue, envName, setting, SETTING_KEYS, type SettingKey } from './schema.js';

export type Origin = { source: 'default' } | { source: 'file'; file: string } | { source: 'env'; name: string } | { source: 'flag'; flag: string };

export interface LoadedConfig {
  values: ConfigValues;
  origins: Record<SettingKey, Origin>;
  /** The config file that was read, or null when there was none. */
  file: string | null;
  /** Environment variables named TOCFS_* that are no setting (typos?), each with a suggestion. */
  warnings: string[];
}

export interface LoadOptions {
  /** Flags the user gave explicitly, by long name (`{ 'cache-dir': '/x' }`); see `flagsFromArgs`. `config` names the file. */
  argv?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** Config file to read instead of TOCFS_CONFIG or the default path; it must exist. */
  file?: string;
  /** Whether defaults are root's (system paths); default: the current user is uid 0. */
  root?: boolean;
  /** What relative paths from flags and the environment are relative to; default: the working directory. */
  cwd?: string;
}

/** A setting that cannot be used, or a config file that cannot be read. */
export class ConfigError extends TocfsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ECONFIG', options);
    this.name = 'ConfigError';
  }
}

/** TOCFS_* variables that are not settings but are still tocfs's own. */
// TOCFS_CERTS_DIR: read by the registry client until it takes registry.certs_dir from here.
// TOCFS_ARGS: the extra command-line arguments of systemd/tocfs-mount@.service, set in every instance's environment.
const OTHER_ENV = new Set(['TOCFS_CONFIG', 'TOCFS_LOG_JSON', 'TOCFS_CERTS_DIR', 'TOCFS_ARGS']);

/** `/etc/tocfs/config.toml` for root, else `$XDG_CONFIG_HOME/tocfs/config.toml` (`~/.config/tocfs/config.toml`). */
export function defaultConfigPath(root: boolean, env: NodeJS.ProcessEnv = process.env): string {
  if (root) return '/etc/tocfs/config.toml';
  const xdg = env.XDG_CONFIG_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(env.HOME || homedir(), '.config'), 'tocfs', 'config.toml');
}

export function describeOrigin(o: Origin): string {
  switch (o.source) {
    case 'default':
      return 'default';
    case 'file':
      return `file ${o.file}`;
    case 'env':
      return `env ${o.name}`;
    case 'flag':
      return `flag --${o.flag}`;
  }
}

const FLAG_KEYS = new Map(SETTING_KEYS.flatMap((k) => (setting(k).flag ? [[setting(k).flag!, k] as const] : [])));

/**
 * The settings flags (and `--config`) present in raw command-line arguments, parsed with
 * yargs' own parser so every spelling yargs accepts (`--x=v`, `--x v`, `--no-x`) counts, and
 * defaults that commands declare for the same flags never pass for a user's choice.
 */
export function flagsFromArgs(args: string[]): Record<string, unknown> {
  const booleans = [...FLAG_KEYS].filter(([, k]) => setting(k).kind === 'boolean').map(([f]) => f);
  const strings = [...FLAG_KEYS].filter(([, k]) => setting(k).kind !== 'boolean').map(([f]) => f);
  const parsed = Parser(args, { boolean: booleans, string: [...strings, 'config'], configuration: { 'camel-case-expansion': false, 'halt-at-non-option': false } });
  const given: Record<string, unknown> = {};
  for (const name of [...FLAG_KEYS.keys(), 'config']) {
    const v = parsed[name];
    if (v !== undefined) given[name] = Array.isArray(v) ? v[v.length - 1] : v;
  }
  return given;
}

/** Levenshtein distance, for did-you-mean suggestions. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

export function didYouMean(name: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(name.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 3)) ? `; did you mean ${best}?` : '';
}

function readConfigFile(file: string, mustExist: boolean): Record<string, unknown> | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !mustExist) return null;
    throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (e) {
    const where = e instanceof TomlError ? ` (line ${e.line}, column ${e.column})` : '';
    throw new ConfigError(`config file ${file} is not valid TOML${where}: ${(e as Error).message.split('\n')[0]}`, { cause: e });
  }
}

/** `[section] key = value` tables → `section.key` → raw value; unknown keys are errors. */
function flattenFile(doc: Record<string, unknown>, file: string): Map<SettingKey, unknown> {
  const out = new Map<SettingKey, unknown>();
  const known = SETTING_KEYS as readonly string[];
  for (const [section, table] of Object.entries(doc)) {
    if (table === null || typeof table !== 'object' || Array.isArray(table) || table instanceof Date) {
      throw new ConfigError(`unknown key ${section} in ${file}: settings live in sections such as [cache] or [fetch]${didYouMean(section, known)}`);
    }
    for (const [name, value] of Object.entries(table)) {
      const key = `${section}.${name}`;
      if (!known.includes(key)) throw new ConfigError(`unknown key ${key} in ${file}${didYouMean(key, known)} (known keys: ${known.join(', ')})`);
      out.set(key as SettingKey, value);
    }
  }
  return out;
}

/**
 * A path setting given as a relative path, made absolute as every Unix tool does: against the
 * working directory when it came from a flag or the environment, against the config file's
 * own directory when it came from the file (so a file means the same wherever it is read
 * from). `~` is the shell's to expand, not ours: a value starting with it is refused.
 */
function absolutePath(key: SettingKey, raw: unknown, origin: Origin, cwd: string): unknown {
  if (setting(key).kind !== 'path' || typeof raw !== 'string' || raw === '' || isAbsolute(raw)) return raw;
  if (raw.startsWith('~')) {
    throw new ConfigError(`invalid value ${JSON.stringify(raw)} for ${key} (from ${describeOrigin(origin)}): ~ is not expanded here; write the path out (e.g. $HOME/…, which the shell expands)`);
  }
  return resolve(origin.source === 'file' ? dirname(origin.file) : cwd, raw);
}

function validate(key: SettingKey, raw: unknown, origin: Origin): unknown {
  const s = setting(key);
  const parsed = s.parse(raw);
  if (parsed.ok) return parsed.value;
  const shown = typeof raw === 'string' ? JSON.stringify(raw) : String(raw);
  throw new ConfigError(`invalid value ${shown} for ${key} (from ${describeOrigin(origin)}): expected ${parsed.expected}`);
}

/**
 * The path settings that came from the environment, as TOCFS_* variables with the absolute
 * paths they were resolved to: for a daemon that starts in `/` and reads its environment
 * again, where a relative path would name another file.
 */
export function absolutePathEnv(config: LoadedConfig): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of SETTING_KEYS) {
    const origin = config.origins[key];
    if (setting(key).kind === 'path' && origin.source === 'env') out[origin.name] = String(config.values[key]);
  }
  return out;
}

export function loadConfig(opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const argv = opts.argv ?? {};
  const ctx: DefaultContext = { root: opts.root ?? process.getuid?.() === 0, env };

  const cwd = opts.cwd ?? process.cwd();
  const named = opts.file ?? (typeof argv.config === 'string' ? argv.config : undefined) ?? (env.TOCFS_CONFIG || undefined);
  // Absolute, so that messages name it fully and a daemon started elsewhere (cwd /) reads the same file.
  const explicit = named === undefined ? undefined : resolve(cwd, named);
  const file = explicit ?? defaultConfigPath(ctx.root, env);
  const doc = readConfigFile(file, explicit !== undefined);
  const fromFile = doc ? flattenFile(doc, file) : new Map<SettingKey, unknown>();

  const values = {} as Record<SettingKey, unknown>;
  const origins = {} as Record<SettingKey, Origin>;
  for (const key of SETTING_KEYS) {
    const flag = setting(key).flag;
    const name = envName(key);
    let origin: Origin = { source: 'default' };
    let value = defaultValue(key, ctx);
    if (flag !== undefined && argv[flag] !== undefined) {
      origin = { source: 'flag', flag };
      value = validate(key, absolutePath(key, typeof argv[flag] === 'boolean' ? argv[flag] : String(argv[flag]), origin, cwd), origin);
    } else if (env[name] !== undefined) {
      origin = { source: 'env', name };
      value = validate(key, absolutePath(key, env[name], origin, cwd), origin);
    } else if (fromFile.has(key)) {
      origin = { source: 'file', file };
      value = validate(key, absolutePath(key, fromFile.get(key), origin, cwd), origin);
    }
    values[key] = value;
    origins[key] = origin;
  }

  const envNames = SETTING_KEYS.map(envName);
  const warnings = Object.keys(env)
    .filter((n) => n.startsWith('TOCFS_') && !OTHER_ENV.has(n) && !envNames.includes(n))
    .map((n) => `environment variable ${n} is not a tocfs setting${didYouMean(n, envNames)}`);

  return { values: values as ConfigValues, origins, file: doc ? file : null, warnings };
}
