/**
 * Every setting tocfs has, in one place: type, default, allowed values, description, and the
 * environment variable and flag that set it. Everything else (loading, validation, `config
 * show`, the reference in docs/guide.md) is derived from this table.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { defaultDaemonMemoryBytes, defaultMemoryBytes } from '../cache/paths.js';
import { formatDuration, formatSize, parseAddress, parseDuration, parseSize } from '../units.js';

/** What a default may depend on: who runs tocfs and their XDG directories. */
export interface DefaultContext {
  root: boolean;
  env: NodeJS.ProcessEnv;
}

/** A value's check: the parsed value, or a reason naming what is allowed. */
type Parsed<T> = { ok: true; value: T } | { ok: false; expected: string };

export interface Setting<T> {
  kind: 'path' | 'size' | 'duration' | 'integer' | 'boolean' | 'enum' | 'address' | 'patterns';
  description: string;
  default: T | ((ctx: DefaultContext) => T);
  /** How the default reads in docs when it depends on the user. */
  defaultText?: string;
  /** Allowed values, for enums. */
  values?: readonly string[];
  /** Long flag name (without `--`) that sets it on the command line, when there is one. */
  flag?: string;
  /** Reads a value from TOML (string, number, boolean) or from env/flag text (string). */
  parse(raw: unknown): Parsed<T>;
  /** The value as one would write it in the config file. */
  format(value: T): string;
}

type Spec<T> = Pick<Setting<T>, 'description' | 'default' | 'defaultText' | 'flag'>;

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });

/** An absolute path; `emptyMeans` says what "" stands for when "" is allowed. */
function path(spec: Spec<string>, emptyMeans?: string): Setting<string> {
  return {
    kind: 'path',
    ...spec,
    parse: (raw) =>
      typeof raw === 'string' && (raw.startsWith('/') || (raw === '' && emptyMeans !== undefined)) ? ok(raw) : { ok: false, expected: emptyMeans ? `an absolute path, or "" for ${emptyMeans}` : 'an absolute path' },
    format: (v) => v,
  };
}

function size(spec: Spec<number>, min = 0): Setting<number> {
  return {
    kind: 'size',
    ...spec,
    parse: (raw) => {
      const n = typeof raw === 'number' && Number.isInteger(raw) ? raw : typeof raw === 'string' ? parseSize(raw) : undefined;
      return n !== undefined && n >= min ? ok(n) : { ok: false, expected: `a size of at least ${formatSize(min)}: bytes or a number with K, M, G or T (binary), e.g. 512M, 10G` };
    },
    format: formatSize,
  };
}

function duration(spec: Spec<number>): Setting<number> {
  return {
    kind: 'duration',
    ...spec,
    parse: (raw) => {
      const n = typeof raw === 'string' ? parseDuration(raw) : undefined;
      return n !== undefined && n > 0 ? ok(n) : { ok: false, expected: 'a duration with a unit (ms, s, m, h, d), e.g. 30s, 500ms, 2m' };
    },
    format: formatDuration,
  };
}

function integer(spec: Spec<number>, min: number, max: number): Setting<number> {
  return {
    kind: 'integer',
    ...spec,
    parse: (raw) => {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN;
      return Number.isInteger(n) && n >= min && n <= max ? ok(n) : { ok: false, expected: `an integer from ${min} to ${max}` };
    },
    format: String,
  };
}

const TRUE = ['true', '1', 'yes', 'on'];
const FALSE = ['false', '0', 'no', 'off'];

function boolean(spec: Spec<boolean>): Setting<boolean> {
  return {
    kind: 'boolean',
    ...spec,
    parse: (raw) => {
      if (typeof raw === 'boolean') return ok(raw);
      const s = typeof raw === 'string' ? raw.trim().toLowerCase() : undefined;
      if (s !== undefined && TRUE.includes(s)) return ok(true);
      if (s !== undefined && FALSE.includes(s)) return ok(false);
      return { ok: false, expected: 'true or false' };
    },
    format: String,
  };
}

function oneOf<const V extends string>(values: readonly V[], spec: Spec<V>): Setting<V> {
  return {
    kind: 'enum',
    values,
    ...spec,
    parse: (raw) => (typeof raw === 'string' && (values as readonly string[]).includes(raw) ? ok(raw as V) : { ok: false, expected: `one of ${values.join(', ')}` }),
    format: (v) => v,
  };
}

function address(spec: Spec<string>): Setting<string> {
  return {
    kind: 'address',
    ...spec,
    parse: (raw) => (typeof raw === 'string' && (raw === '' || parseAddress(raw)) ? ok(raw.trim()) : { ok: false, expected: 'HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464) or "" for off' }),
    format: (v) => v,
  };
}

/** A repository name or glob: `*` any characters but `/`, `**` any characters. */
const REPOSITORY_PATTERN = /^[A-Za-z0-9*][A-Za-z0-9.\-_:*]*(\/[A-Za-z0-9.\-_*]+)*$/;

/** Repository patterns: a TOML array of strings, or comma-separated in the environment and on the command line. */
function patterns(spec: Spec<string[]>): Setting<string[]> {
  return {
    kind: 'patterns',
    ...spec,
    parse: (raw) => {
      const list = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',').map((p) => p.trim()).filter((p) => p !== '') : undefined;
      return list && list.every((p) => typeof p === 'string' && REPOSITORY_PATTERN.test(p))
        ? ok(list as string[])
        : { ok: false, expected: 'repository names or globs (REGISTRY/PATH, * within a path element, ** across them), e.g. ["registry.example.com/team/*"]' };
    },
    format: (v) => v.join(','),
  };
}

function xdgDir(ctx: DefaultContext, variable: string, fallback: string): string {
  const v = ctx.env[variable];
  return v && v.startsWith('/') ? v : join(ctx.env.HOME || homedir(), fallback);
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const SETTINGS = {
  'cache.dir': path({
    description: 'Where verified chunks and TOCs are kept on disk (content-addressed, shared by every image and layer).',
    default: (ctx) => (ctx.root ? '/var/lib/tocfs' : join(xdgDir(ctx, 'XDG_CACHE_HOME', '.cache'), 'tocfs')),
    defaultText: '/var/lib/tocfs as root, else $XDG_CACHE_HOME/tocfs (~/.cache/tocfs)',
    flag: 'cache-dir',
  }),
  'cache.max_size': size({ description: 'Disk cache budget; least recently used chunks are evicted beyond it.', default: 10 * 1024 ** 3 }, 1024 ** 2),
  'cache.memory_size': size({ description: 'Memory tier budget (decompressed chunks kept in RAM); daemon.memory may keep the tier smaller. When set nowhere: 1/16 of RAM, between 128M and 1G, for tocfs mount and cat; 16M for tocfs store, whose readers keep what they read in the page cache.', default: () => defaultMemoryBytes(), defaultText: '1/16 of RAM, between 128M and 1G (16M for tocfs store)' }),
  'daemon.memory': size({
    description:
      'The resident memory (RSS) a tocfs daemon keeps within, all in: Node, the TOCs and trees of the images it serves, requests in flight and the memory tier. The memory tier shrinks as the rest grows, range requests are kept small enough that the requests in flight of one layer hold at most a sixteenth of it, and what the rest alone needs beyond it is logged as a warning.',
    default: () => defaultDaemonMemoryBytes(),
    defaultText: '1/8 of RAM, between 256M and 2G',
  }, 64 * 1024 ** 2),
  'daemon.fuse_session': oneOf(['fuse-native', 'tocfs'], {
    description:
      'Who speaks FUSE with the kernel: tocfs, its own session on /dev/fuse (needs the native piece built at install; mounted with mount(2) as root, through fusermount otherwise: directory listings with attributes in one round trip, passthrough reads of completely cached files as root (daemon.passthrough), restarts under running containers with --takeover or systemctl restart), or fuse-native (libfuse 2, what tocfs used before). When the own session cannot start (no native piece, fusermount failed), the daemon says why and uses fuse-native.',
    default: 'tocfs',
  }),
  'daemon.passthrough': boolean({
    description:
      'With daemon.fuse_session = tocfs: once a file is completely in the cache it becomes one file named by its digest, and opens of it are handed to the kernel (FUSE passthrough, Linux 6.9 and later), so reads and mmap never reach tocfs and containers of different images holding the same file share one page-cache copy.',
    default: true,
  }),
  'fetch.max_request_bytes': size({ description: "Largest single HTTP range request. Neighbouring missing frames are grouped into requests that start at 1M and grow up to this size while the link's measured bandwidth-delay product says larger requests pay (a registry on a fast link spends as long before the first byte as on sending megabytes).", default: 8 * 1024 ** 2 }, 4096),
  'fetch.max_gap': size({ description: 'Largest run of unneeded compressed bytes still fetched to join two chunks into one request (a request costs the registry more than a few KiB).', default: 16 * 1024 }),
  'fetch.concurrency': integer({ description: 'Range requests in flight per layer.', default: 8 }, 1, 1024),
  'fetch.neighbours': size({ description: 'A read of a small file also fetches the small files that follow it in the layer (files of one directory sit together and are often read one after another), up to this many compressed bytes in all; 0 turns it off.', default: 128 * 1024 }),
  'fetch.read_ahead': size({ description: 'How far ahead (uncompressed) a file read sequentially is fetched; 0 turns read-ahead off.', default: 32 * 1024 ** 2 }),
  'fetch.timeout': duration({
    description:
      'Backstop: the longest a read waits for its chunks, and a range request may run, even while bytes keep coming; then EIO (the mount keeps serving; a later read retries). A registry that stalls or stops answering fails reads much sooner (registry.stall_timeout).',
    default: 5 * 60_000,
  }),
  'registry.retries': integer({ description: 'Retries of a failed registry request (network error, 5xx, 429) with jittered backoff, after the first attempt.', default: 4 }, 0, 20),
  'registry.stall_timeout': duration({
    description:
      'A registry request is given up when no bytes arrive for this long (connecting, waiting for the answer, or within a body); a slow transfer that keeps moving is never cut. When a quick check then gets no answer either (or the connection is refused), the registry counts as down: reads of data not in the cache fail at once, or go to a mirror from registries.conf, until a background check (every 2 s) gets an answer.',
    default: 10_000,
  }),
  'registry.tls_verify': boolean({ description: 'Require HTTPS and verify certificates (false allows plain HTTP and unverified TLS, like podman --tls-verify=false).', default: true, flag: 'tls-verify' }),
  'registry.connections': integer({ description: 'Connections per registry host.', default: 16 }, 1, 256),
  'registry.auth_file': path({
    description: 'The only auth file to read for credentials (like podman --authfile); "" reads $REGISTRY_AUTH_FILE or the standard Podman/Docker list.',
    default: '',
  }, 'the standard list'),
  'registry.registries_conf': path({ description: 'registries.conf to read instead of the standard containers-registries.conf(5) search list; "" for that list.', default: '' }, 'the standard list'),
  'registry.certs_dir': path({ description: 'Per-registry TLS trust: HOST[:PORT]/*.crt, *.cert, *.key (as containers-certs.d(5)).', default: '/etc/containers/certs.d' }),
  'prefetch.mode': oneOf(['landmark', 'all', 'none'], {
    description: 'What to fetch without being asked: landmark = the files an eStargz layer marks for prefetch, at mount (and by tocfs store when it first serves the layer); all = every layer in the background at low priority (mount; the store prefetches landmarks); none = only what is read.',
    default: 'landmark',
    flag: 'prefetch',
  }),
  'profile.record': boolean({ description: "Record a start-up profile (the files and ranges read after an image's first use) when the image has none of its own; kept beside the cache.", default: true }),
  'profile.replay': boolean({ description: "At an image's first use, fetch the files its start-up profile names ahead of reads (its own profile, one sharing a layer, one of its repository, or one published in the registry).", default: true }),
  'profile.idle': duration({ description: 'A recording ends when reads have been idle this long.', default: 10_000 }),
  'profile.window': duration({ description: "A recording ends this long after the image's first use at the latest.", default: 120_000 }),
  'profile.max_bytes': size({ description: "Compressed bytes one image's profile replay may fetch at most.", default: 512 * 1024 ** 2 }),
  'profile.max_requests': integer({ description: "Range requests one image's profile replay may make at most.", default: 512 }, 0, 100_000),
  'mount.read_ahead': size({ description: "Kernel read-ahead of each FUSE mount (the mount's read_ahead_kb); 0 leaves the kernel's default.", default: 4 * 1024 ** 2 }),
  'mount.allow_other': boolean({
    description: 'Let users other than the one who mounted read the mount (FUSE allow_other; file modes are still checked). Needs root or user_allow_other in /etc/fuse.conf.',
    default: (ctx) => ctx.root,
    defaultText: 'true as root, else false',
  }),
  'log.level': oneOf(LOG_LEVELS, { description: 'Least severe log level written.', default: 'info', flag: 'log-level' }),
  'log.format': oneOf(['auto', 'json', 'pretty'], { description: 'auto = pretty on a terminal, JSON lines otherwise (always JSON under systemd).', default: 'auto' }),
  'metrics.address': address({
    description: 'Where to serve Prometheus metrics (/metrics) and /healthz, as HOST:PORT; "" = off. When set nowhere: off for tocfs mount, 127.0.0.1:9464 for tocfs store.',
    default: '',
    flag: 'metrics-address',
  }),
  'store.dir': path({
    description: 'Mount point of the additional layer store that Podman and CRI-O read (tocfs store).',
    default: (ctx) => (ctx.root ? '/var/lib/tocfs/store' : join(xdgDir(ctx, 'XDG_DATA_HOME', '.local/share'), 'tocfs', 'store')),
    defaultText: '/var/lib/tocfs/store as root, else $XDG_DATA_HOME/tocfs/store',
  }),
  'store.allow_other': boolean({
    description:
      "Let users other than the store's own read the store (FUSE allow_other). Off: Podman and CRI-O run as the store's user and overlayfs reads lower layers with the mounter's credentials, so containers need no allow_other; on, any local user can make the store resolve and read images with its credentials.",
    default: false,
  }),
  'store.id_map': oneOf(['auto', 'none'], {
    description:
      "File owners the store shows. auto = as TOCs say when the store runs as root; run by another user (for that user's rootless Podman), mapped as rootless Podman maps them: container ID 0 = the user's own ID, IDs 1, 2, … = the user's /etc/subuid and /etc/subgid ranges in turn, anything beyond them 65534. none = as TOCs say (files owned by root then show as 65534 in rootless containers).",
    default: 'auto',
  }),
  'index.trust': patterns({
    description:
      'Repositories whose published seekable indexes of plain gzip layers tocfs uses, so that their images are pulled lazily. Anyone who can push to a repository can publish an index for its images, and a wrong index makes tocfs serve what the index says until the background check of the whole layer catches it (docs/security.md). Empty: only indexes tocfs built itself from a whole, digest-checked layer.',
    default: [],
    defaultText: '[] (none)',
  }),
  'index.publish': boolean({
    description: "After fetching a plain gzip layer whole and indexing it, publish the index beside the image in its repository (needs push rights there; a failure is a warning), so that other nodes that trust the repository pull the image lazily.",
    default: false,
  }),
  'index.check_delay': duration({
    description: 'How long after a layer is first served from a published index the background read of the whole layer that checks the index starts (start-up reads go first).',
    default: 30_000,
  }),
  'index.checkpoint_spacing': size({ description: 'Uncompressed bytes between the checkpoints of a gzip layer index: smaller means less decompressed per read and a larger index (32 KiB per checkpoint).', default: 4 * 1024 ** 2 }, 256 * 1024),
};

export type SettingKey = keyof typeof SETTINGS;
export type ConfigValues = { [K in SettingKey]: (typeof SETTINGS)[K] extends Setting<infer T> ? T : never };

export const SETTING_KEYS = Object.keys(SETTINGS) as SettingKey[];

/** The setting's own definition (type-erased, for code that walks every setting). */
export function setting(key: SettingKey): Setting<unknown> {
  return SETTINGS[key] as unknown as Setting<unknown>;
}

/** `cache.max_size` → `TOCFS_CACHE_MAX_SIZE`. */
export function envName(key: SettingKey): string {
  return `TOCFS_${key.replace('.', '_').toUpperCase()}`;
}

export function defaultValue(key: SettingKey, ctx: DefaultContext): unknown {
  const d = setting(key).default;
  return typeof d === 'function' ? (d as (c: DefaultContext) => unknown)(ctx) : d;
}

/** The default as docs and help show it. */
export function defaultText(key: SettingKey, ctx?: DefaultContext): string {
  const s = setting(key);
  if (s.defaultText && !ctx) return s.defaultText;
  const v = ctx ? defaultValue(key, ctx) : s.default;
  const text = s.format(v);
  return text === '' ? '""' : text;
}
