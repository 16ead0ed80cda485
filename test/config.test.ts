/**
 * Configuration: defaults with no file, the precedence flags > TOCFS_* > file > defaults,
 * the config file's location, and errors that name the key, where it came from and what is
 * allowed. Then `tocfs config show` end to end, and settings reaching commands other than
 * the daemons (`tocfs cat`: its cache directory and registry TLS from file, env and flag).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import type { ConfigShowJson } from '../src/cli/commands/config.js';
import { absolutePathEnv, ConfigError, flagsFromArgs, formatDuration, formatSize, loadConfig, parseDuration, parseSize, SETTING_KEYS } from '../src/config/index.js';
import { renderExampleConfig } from '../src/config/reference.js';
import { runCli } from './helpers/cli.js';
import { buildImage } from './helpers/images.js';
import { fuseSkipReason, Mounts } from './helpers/mounts.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { isolatedCliEnv } from './helpers/registry-env.js';

const tmp = mkdtempSync(join(tmpdir(), 'tocfs-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function configFile(text: string): string {
  const file = join(tmp, `config-${n++}.toml`);
  writeFileSync(file, text);
  return file;
}

/** A user's environment with no config file of their own. */
const home = join(tmp, 'home');
const userEnv = { HOME: home };

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    return e.message;
  }
  assert.fail('expected a ConfigError');
}

describe('units', () => {
  it('reads sizes in binary units and writes them back', () => {
    assert.equal(parseSize('10G'), 10 * 2 ** 30);
    assert.equal(parseSize('512M'), 512 * 2 ** 20);
    assert.equal(parseSize('64k'), 65536);
    assert.equal(parseSize('1.5GiB'), 1.5 * 2 ** 30);
    assert.equal(parseSize('4096'), 4096);
    assert.equal(parseSize('10X'), undefined);
    assert.equal(parseSize('-1G'), undefined);
    assert.equal(formatSize(10 * 2 ** 30), '10G');
    assert.equal(formatSize(1536 * 1024), '1536K');
    assert.equal(formatSize(4097), '4097');
  });
  it('reads durations with a unit and writes them back', () => {
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('30'), undefined);
    assert.equal(formatDuration(30_000), '30s');
    assert.equal(formatDuration(1500), '1500ms');
    assert.equal(formatDuration(7_200_000), '2h');
  });
});

describe('loadConfig', () => {
  it('works with no file at all: documented defaults, every origin "default"', () => {
    const cfg = loadConfig({ env: userEnv, root: false });
    assert.equal(cfg.file, null);
    assert.equal(cfg.values['cache.dir'], join(home, '.cache', 'tocfs'));
    assert.equal(cfg.values['cache.max_size'], 10 * 2 ** 30);
    assert.equal(cfg.values['fetch.timeout'], 300_000);
    assert.equal(cfg.values['registry.stall_timeout'], 10_000);
    assert.equal(cfg.values['registry.tls_verify'], true);
    assert.equal(cfg.values['prefetch.mode'], 'landmark');
    assert.equal(cfg.values['log.level'], 'info');
    assert.equal(cfg.values['metrics.address'], '');
    assert.equal(cfg.values['mount.allow_other'], false);
    for (const key of SETTING_KEYS) assert.deepEqual(cfg.origins[key], { source: 'default' }, key);
    assert.deepEqual(cfg.warnings, []);
  });

  it('uses root defaults and XDG directories', () => {
    const asRoot = loadConfig({ env: { TOCFS_CONFIG: configFile('') }, root: true });
    assert.equal(asRoot.values['cache.dir'], '/var/lib/tocfs');
    assert.equal(asRoot.values['mount.allow_other'], true);
    const xdg = loadConfig({ env: { ...userEnv, XDG_CACHE_HOME: '/xdg/cache', XDG_DATA_HOME: '/xdg/data' }, root: false });
    assert.equal(xdg.values['cache.dir'], '/xdg/cache/tocfs');
    assert.equal(xdg.values['store.dir'], '/xdg/data/tocfs/store');
  });

  it('finds the user config file in $XDG_CONFIG_HOME/tocfs/config.toml', () => {
    const xdg = join(tmp, 'xdg-config');
    mkdirSync(join(xdg, 'tocfs'), { recursive: true });
    writeFileSync(join(xdg, 'tocfs', 'config.toml'), '[fetch]\nconcurrency = 3\n');
    const cfg = loadConfig({ env: { ...userEnv, XDG_CONFIG_HOME: xdg }, root: false });
    assert.equal(cfg.file, join(xdg, 'tocfs', 'config.toml'));
    assert.equal(cfg.values['fetch.concurrency'], 3);
    assert.deepEqual(cfg.origins['fetch.concurrency'], { source: 'file', file: cfg.file });
  });

  it('takes flags over TOCFS_* environment over the file over defaults', () => {
    const file = configFile(`
[cache]
dir = "/from/file"
max_size = "1G"
memory_size = 1048576
[fetch]
concurrency = 12
timeout = "45s"
[registry]
tls_verify = true
[prefetch]
mode = "all"
`);
    const env = { ...userEnv, TOCFS_CONFIG: file, TOCFS_CACHE_DIR: '/from/env', TOCFS_FETCH_CONCURRENCY: '4', TOCFS_REGISTRY_TLS_VERIFY: 'true' };
    const argv = flagsFromArgs(['mount', 'docker://x/y', '/mnt', '--cache-dir', '/from/flag', '--tls-verify=false']);
    const cfg = loadConfig({ argv, env, root: false });
    assert.equal(cfg.file, file);
    assert.equal(cfg.values['cache.dir'], '/from/flag');
    assert.deepEqual(cfg.origins['cache.dir'], { source: 'flag', flag: 'cache-dir' });
    assert.equal(cfg.values['registry.tls_verify'], false);
    assert.deepEqual(cfg.origins['registry.tls_verify'], { source: 'flag', flag: 'tls-verify' });
    assert.equal(cfg.values['fetch.concurrency'], 4);
    assert.deepEqual(cfg.origins['fetch.concurrency'], { source: 'env', name: 'TOCFS_FETCH_CONCURRENCY' });
    assert.equal(cfg.values['cache.max_size'], 2 ** 30);
    assert.equal(cfg.values['cache.memory_size'], 1048576);
    assert.equal(cfg.values['fetch.timeout'], 45_000);
    assert.equal(cfg.values['prefetch.mode'], 'all');
    assert.deepEqual(cfg.origins['prefetch.mode'], { source: 'file', file });
    assert.equal(cfg.values['fetch.read_ahead'], 32 * 2 ** 20);
    assert.deepEqual(cfg.origins['fetch.read_ahead'], { source: 'default' });
  });

  it('--config (and the file option) beat TOCFS_CONFIG', () => {
    const a = configFile('[fetch]\nconcurrency = 11\n');
    const b = configFile('[fetch]\nconcurrency = 22\n');
    assert.equal(loadConfig({ argv: flagsFromArgs(['config', 'show', '--config', b]), env: { ...userEnv, TOCFS_CONFIG: a }, root: false }).values['fetch.concurrency'], 22);
    assert.equal(loadConfig({ file: b, env: { ...userEnv, TOCFS_CONFIG: a }, root: false }).values['fetch.concurrency'], 22);
  });

  it('reads flags only when given, in every spelling yargs accepts', () => {
    assert.deepEqual(flagsFromArgs(['inspect', 'oci:/x']), {});
    assert.deepEqual(flagsFromArgs(['inspect', '--no-tls-verify']), { 'tls-verify': false });
    assert.deepEqual(flagsFromArgs(['inspect', '--tls-verify', 'false', 'oci:/x']), { 'tls-verify': false });
    assert.deepEqual(flagsFromArgs(['mount', '--prefetch=all', '--metrics-address', '127.0.0.1:9464']), { prefetch: 'all', 'metrics-address': '127.0.0.1:9464' });
    assert.deepEqual(flagsFromArgs(['x', '--log-level', 'debug', '--log-level', 'warn']), { 'log-level': 'warn' });
  });

  it('names the key, the file and the suggestion for an unknown key', () => {
    const file = configFile('[cache]\nmax_sise = "1G"\n');
    const msg = configError(() => loadConfig({ env: { ...userEnv, TOCFS_CONFIG: file }, root: false }));
    assert.match(msg, /unknown key cache\.max_sise/);
    assert.ok(msg.includes(file), msg);
    assert.match(msg, /did you mean cache\.max_size\?/);
  });

  it('names an unknown section and a key outside any section', () => {
    const sec = configFile('[fecth]\nconcurrency = 2\n');
    assert.match(configError(() => loadConfig({ env: { ...userEnv, TOCFS_CONFIG: sec }, root: false })), /unknown key fecth\.concurrency .*did you mean fetch\.concurrency\?/);
    const bare = configFile('concurrency = 2\n');
    assert.match(configError(() => loadConfig({ env: { ...userEnv, TOCFS_CONFIG: bare }, root: false })), /unknown key concurrency in .*sections such as \[cache\]/);
  });

  it('names the key, its source and the allowed values for a bad value', () => {
    const file = configFile('[prefetch]\nmode = "everything"\n');
    const fromFile = configError(() => loadConfig({ env: { ...userEnv, TOCFS_CONFIG: file }, root: false }));
    assert.equal(fromFile, `invalid value "everything" for prefetch.mode (from file ${file}): expected one of landmark, all, none`);
    const fromEnv = configError(() => loadConfig({ env: { ...userEnv, TOCFS_CACHE_MAX_SIZE: '10X' }, root: false }));
    assert.match(fromEnv, /^invalid value "10X" for cache\.max_size \(from env TOCFS_CACHE_MAX_SIZE\): expected a size .* e\.g\. 512M, 10G$/);
    const fromFlag = configError(() => loadConfig({ argv: { 'metrics-address': 'localhost' }, env: userEnv, root: false }));
    assert.match(fromFlag, /^invalid value "localhost" for metrics\.address \(from flag --metrics-address\): expected HOST:PORT/);
    const wrongType = configFile('[registry]\ntls_verify = "maybe"\nretries = 2\n');
    assert.match(configError(() => loadConfig({ env: { ...userEnv, TOCFS_CONFIG: wrongType }, root: false })), /"maybe" for registry\.tls_verify .*expected true or false/);
    const outOfRange = configFile('[fetch]\nconcurrency = 0\n');
    assert.match(configError(() => loadConfig({ env: { ...userEnv, TOCFS_CONFIG: outOfRange }, root: false })), /invalid value 0 for fetch\.concurrency .*expected an integer from 1 to 1024/);
    const noUnit = configFile('[fetch]\ntimeout = 30\n');
    assert.match(configError(() => loadConfig({ env: { ...userEnv, TOCFS_CONFIG: noUnit }, root: false })), /fetch\.timeout .*a duration with a unit/);
    assert.match(configError(() => loadConfig({ argv: { 'cache-dir': '' }, env: userEnv, root: false })), /^invalid value "" for cache\.dir \(from flag --cache-dir\): expected an absolute path$/);
    assert.equal(loadConfig({ env: { ...userEnv, TOCFS_REGISTRY_AUTH_FILE: '' }, root: false }).values['registry.auth_file'], '');
  });

  it('makes relative paths absolute: flags and the environment from the working directory, the file from its own', () => {
    const cwd = join(tmp, 'work');
    const fromFlag = loadConfig({ argv: { 'cache-dir': 'c2' }, env: { ...userEnv, TOCFS_REGISTRY_AUTH_FILE: '../auth.json' }, root: false, cwd });
    assert.equal(fromFlag.values['cache.dir'], join(cwd, 'c2'));
    assert.equal(fromFlag.values['registry.auth_file'], join(tmp, 'auth.json'));
    // A daemon starts in / and reads its environment again: it gets the absolute paths.
    assert.deepEqual(absolutePathEnv(fromFlag), { TOCFS_REGISTRY_AUTH_FILE: join(tmp, 'auth.json') });

    mkdirSync(join(tmp, 'etc'), { recursive: true });
    writeFileSync(join(tmp, 'etc', 'relative.toml'), '[cache]\ndir = "cache"\n[registry]\ncerts_dir = "./certs.d"\nregistries_conf = ""\n');
    // Named relative to the working directory, the file is read from there and named absolutely.
    const fromFile = loadConfig({ argv: { config: join('..', 'etc', 'relative.toml') }, env: userEnv, root: false, cwd });
    assert.equal(fromFile.file, join(tmp, 'etc', 'relative.toml'));
    assert.equal(fromFile.values['cache.dir'], join(tmp, 'etc', 'cache'));
    assert.equal(fromFile.values['registry.certs_dir'], join(tmp, 'etc', 'certs.d'));
    assert.equal(fromFile.values['registry.registries_conf'], '');
    assert.deepEqual(absolutePathEnv(fromFile), {});

    assert.match(configError(() => loadConfig({ argv: { 'cache-dir': '~/cache' }, env: userEnv, root: false, cwd })), /^invalid value "~\/cache" for cache\.dir \(from flag --cache-dir\): ~ is not expanded here/);
  });

  it('tocfs --cache-dir c2 uses c2 under the working directory', () => {
    const cwd = join(tmp, 'cli-cwd');
    mkdirSync(cwd, { recursive: true });
    const entry = fileURLToPath(new URL('../src/cli/entry.ts', import.meta.url));
    const res = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), entry, 'cache', 'stats', '--cache-dir', 'c2'], { cwd, env: { ...process.env, ...userEnv, TOCFS_CONFIG: '' }, encoding: 'utf8' });
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`^cache directory: ${join(cwd, 'c2')} `, 'm'));
  });

  it('names the file and line of a TOML syntax error, and a named file that is missing', () => {
    const file = configFile('[cache]\nmax_size = 10G\n');
    assert.match(configError(() => loadConfig({ env: { ...userEnv, TOCFS_CONFIG: file }, root: false })), new RegExp(`config file ${file} is not valid TOML \\(line 2,`));
    const missing = join(tmp, 'nope.toml');
    assert.match(configError(() => loadConfig({ file: missing, env: userEnv, root: false })), new RegExp(`cannot read config file ${missing}: ENOENT`));
  });

  it('warns about TOCFS_* variables that are no setting, with a suggestion', () => {
    const cfg = loadConfig({ env: { ...userEnv, TOCFS_CACHE_MAXSIZE: '1G', TOCFS_LOG_JSON: '1', TOCFS_ARGS: '--prefetch all' }, root: false });
    assert.deepEqual(cfg.warnings, ['environment variable TOCFS_CACHE_MAXSIZE is not a tocfs setting; did you mean TOCFS_CACHE_MAX_SIZE?']);
  });
});

describe('config example', () => {
  it('is a valid config file as shipped, and with every line uncommented gives root\'s defaults', () => {
    const text = renderExampleConfig();
    const shipped = loadConfig({ env: { TOCFS_CONFIG: configFile(text) }, root: true });
    for (const key of SETTING_KEYS) assert.equal(shipped.origins[key].source, 'default', key);
    const uncommented = text.replace(/^#(\w+ = )/gm, '$1');
    const file = configFile(uncommented);
    const all = loadConfig({ env: { TOCFS_CONFIG: file }, root: true });
    for (const key of SETTING_KEYS) assert.deepEqual(all.origins[key], { source: 'file', file }, key);
    assert.deepEqual(all.values, shipped.values);
  });
});

describe('tocfs config show', () => {
  const file = configFile('[cache]\nmax_size = "2G"\n[log]\nlevel = "warn"\n');
  const env = { ...userEnv, TOCFS_CONFIG: file, TOCFS_FETCH_CONCURRENCY: '7' };

  it('--json gives each value and where it came from', async () => {
    const res = await runCli(['config', 'show', '--json', '--cache-dir', '/flag/cache', '--log-level', 'error'], { env });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout.toString()) as ConfigShowJson;
    assert.equal(out.file, file);
    assert.deepEqual(Object.keys(out.settings), SETTING_KEYS);
    assert.deepEqual(out.settings['cache.max_size'], { value: 2 * 2 ** 30, text: '2G', origin: 'file', from: `file ${file}`, env: 'TOCFS_CACHE_MAX_SIZE', flag: null });
    assert.equal(out.settings['fetch.concurrency'].value, 7);
    assert.equal(out.settings['fetch.concurrency'].from, 'env TOCFS_FETCH_CONCURRENCY');
    assert.equal(out.settings['cache.dir'].value, '/flag/cache');
    assert.equal(out.settings['cache.dir'].from, 'flag --cache-dir');
    assert.equal(out.settings['log.level'].value, 'error');
    assert.equal(out.settings['log.level'].from, 'flag --log-level');
    assert.equal(out.settings['prefetch.mode'].from, 'default');
  });

  it('prints a config file that reads back to the same settings', async () => {
    const res = await runCli(['config', 'show'], { env });
    assert.equal(res.code, 0, res.stderr);
    const text = res.stdout.toString();
    assert.match(text, /^max_size = "2G" +# file /m);
    assert.match(text, /^concurrency = 7 +# env TOCFS_FETCH_CONCURRENCY$/m);
    const again = configFile(text);
    // The CLI ran as this user, so its defaults are this user's.
    const root = process.getuid?.() === 0;
    const reread = loadConfig({ env: { ...userEnv, TOCFS_CONFIG: again }, root });
    const original = loadConfig({ env, root });
    assert.deepEqual(reread.values, original.values);
  });

  it('fails with the validation message and exit status 1 on a bad setting', async () => {
    const res = await runCli(['config', 'show'], { env: { ...env, TOCFS_PREFETCH_MODE: 'eager' } });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /tocfs: invalid value "eager" for prefetch\.mode \(from env TOCFS_PREFETCH_MODE\): expected one of landmark, all, none/);
    assert.equal(res.stdout.length, 0);
  });

  it('parses as TOML', async () => {
    const res = await runCli(['config', 'show'], { env: { ...userEnv, TOCFS_CONFIG: configFile('') } });
    assert.equal(res.code, 0, res.stderr);
    const doc = parseToml(res.stdout.toString()) as Record<string, Record<string, unknown>>;
    assert.equal(doc.fetch?.concurrency, 8);
    assert.equal(doc.cache?.max_size, '10G');
  });
});

describe('settings reach tocfs cat (a command that is no daemon)', () => {
  const MOTD = 'configured\n';
  let reg: TestRegistry;
  let oci: string;
  let remote: string;
  // The registry client reads only files under tmp (not the machine's registries.conf).
  const isolated = { ...userEnv, ...isolatedCliEnv(tmp) };

  before(async () => {
    const img = await buildImage(join(tmp, 'cat-image'), { format: 'zstd:chunked', layers: [[{ path: 'etc/motd', content: MOTD }]] });
    oci = `oci:${img.dir}`;
    reg = await startRegistry();
    await reg.load(img.dir, 'configured');
    remote = `docker://${reg.host}/configured:latest`;
  });
  after(async () => {
    await reg?.stop();
  });

  it('cache.dir: the flag beats TOCFS_CACHE_DIR, which beats the file', async () => {
    const [fromFile, fromEnv, fromFlag] = ['file', 'env', 'flag'].map((w) => join(tmp, `cache-${w}`));
    const file = configFile(`[cache]\ndir = "${fromFile}"\n`);
    const used = (): string[] => [fromFile, fromEnv, fromFlag].filter((d) => existsSync(join(d, 'chunks')));

    const a = await runCli(['cat', oci, '/etc/motd'], { env: { ...isolated, TOCFS_CONFIG: file } });
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout.toString(), MOTD);
    assert.deepEqual(used(), [fromFile]);
    const b = await runCli(['cat', oci, '/etc/motd'], { env: { ...isolated, TOCFS_CONFIG: file, TOCFS_CACHE_DIR: fromEnv } });
    assert.equal(b.code, 0, b.stderr);
    assert.deepEqual(used(), [fromFile, fromEnv]);
    const c = await runCli(['cat', '--cache-dir', fromFlag, oci, '/etc/motd'], { env: { ...isolated, TOCFS_CONFIG: file, TOCFS_CACHE_DIR: fromEnv } });
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(used(), [fromFile, fromEnv, fromFlag]);
  });

  it('registry.tls_verify: a plain-HTTP registry is read only when the winning source says false', async () => {
    const file = configFile('[registry]\ntls_verify = false\n');
    const cat = (args: string[], env: NodeJS.ProcessEnv) => runCli(['cat', '--cache-dir', join(tmp, 'cache-tls'), ...args, remote, '/etc/motd'], { env: { ...isolated, ...env } });

    const byDefault = await cat([], {});
    assert.equal(byDefault.code, 1, 'HTTPS is required by default');
    assert.match(byDefault.stderr, /TLS|HTTPS|https/);
    const fromFile = await cat([], { TOCFS_CONFIG: file });
    assert.equal(fromFile.code, 0, fromFile.stderr);
    assert.equal(fromFile.stdout.toString(), MOTD);
    const envOverFile = await cat([], { TOCFS_CONFIG: file, TOCFS_REGISTRY_TLS_VERIFY: 'true' });
    assert.equal(envOverFile.code, 1, 'TOCFS_REGISTRY_TLS_VERIFY=true beats the file');
    const flagOverEnv = await cat(['--tls-verify=false'], { TOCFS_CONFIG: file, TOCFS_REGISTRY_TLS_VERIFY: 'true' });
    assert.equal(flagOverEnv.code, 0, flagOverEnv.stderr);
    assert.equal(flagOverEnv.stdout.toString(), MOTD);
    const flagTrue = await cat(['--tls-verify'], { TOCFS_REGISTRY_TLS_VERIFY: 'false' });
    assert.equal(flagTrue.code, 1, '--tls-verify beats TOCFS_REGISTRY_TLS_VERIFY=false');
  });

  it('registry.stall_timeout: with the registry frozen, tocfs cat fails after the winning stall timeout, which the message names', async () => {
    const file = configFile('[registry]\nstall_timeout = "1s"\n');
    reg.signal('SIGSTOP');
    try {
      for (const [env, stall] of [
        [{ TOCFS_CONFIG: file }, '1s'],
        [{ TOCFS_CONFIG: file, TOCFS_REGISTRY_STALL_TIMEOUT: '2s' }, '2s'],
      ] as const) {
        const started = Date.now();
        const r = await runCli(['cat', '--tls-verify=false', '--cache-dir', join(tmp, 'cache-stall'), remote, '/etc/motd'], { env: { ...isolated, ...env } });
        const ms = Date.now() - started;
        assert.equal(r.code, 1);
        // A plain-HTTP registry is asked over TLS first: its TLS handshake is what stalls.
        assert.match(r.stderr, new RegExp(`registry ${reg.host} is not answering .*no (data for|connection within) ${stall} \\(registry\\.stall_timeout\\)`));
        // Asked over TLS, then plain HTTP, then the check (as long, at most 5 s), and the CLI's
        // start-up: far below the 20 s and more the default of 10s would take.
        assert.ok(ms < 3 * parseInt(stall) * 1000 + 6000, `${stall}: failed after ${ms} ms`);
      }
    } finally {
      reg.signal('SIGCONT');
    }
  });

  it('mount.read_ahead reaches the FUSE mount: TOCFS_MOUNT_READ_AHEAD beats the file', async (t) => {
    const skip = await fuseSkipReason();
    if (skip) return t.skip(skip);
    const mounts = new Mounts(tmp, { ...isolated, TOCFS_CONFIG: configFile('[mount]\nread_ahead = "2M"\n'), TOCFS_MOUNT_READ_AHEAD: '1M' });
    try {
      const mnt = await mounts.mount(oci);
      const dev = statSync(mnt).dev;
      const bdi = `/sys/class/bdi/${(dev >> 8) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}/read_ahead_kb`;
      assert.equal(readFileSync(bdi, 'utf8').trim(), '1024');
      assert.equal(readFileSync(join(mnt, 'etc/motd'), 'utf8'), MOTD);
    } finally {
      await mounts.cleanup();
    }
  });

  it('a bad value from the environment fails the command with the key, the source and the allowed values', async () => {
    const res = await runCli(['cat', oci, '/etc/motd'], { env: { ...isolated, TOCFS_FETCH_CONCURRENCY: 'lots' } });
    assert.equal(res.code, 1);
    assert.equal(res.stdout.length, 0);
    assert.match(res.stderr, /invalid value "lots" for fetch\.concurrency \(from env TOCFS_FETCH_CONCURRENCY\): expected an integer from 1 to 1024/);
  });
});
