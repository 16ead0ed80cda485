/**
 * containers-registries.conf(5): which registries are insecure or blocked, where a name is
 * really pulled from (`location`), and the mirrors to try first. Version 2 format, plus the
 * v1 `[registries.insecure]` / `[registries.block]` lists that old installations still have.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { SourceError } from '../errors.js';
import type { DockerReference } from '../reference.js';

export type PullFromMirror = 'all' | 'digest-only' | 'tag-only';

export interface MirrorConfig {
  location: string;
  insecure: boolean;
  pullFromMirror: PullFromMirror;
}

export interface RegistryConfig {
  /** What a reference must start with (`example.com`, `example.com/ns`, `*.example.com`). */
  prefix: string;
  /** Where it is pulled from instead; empty for a wildcard prefix (pull from the name's own host). */
  location: string;
  insecure: boolean;
  blocked: boolean;
  mirrorByDigestOnly: boolean;
  mirrors: MirrorConfig[];
}

export interface RegistriesConf {
  registries: RegistryConfig[];
  /**
   * `credential-helpers`: where credentials are looked up, in order — the auth files
   * (`containers-auth.json`) or docker-credential-NAME programs. Unset: the auth files only.
   */
  credentialHelpers?: { helpers: string[]; file: string };
  /** The files that were read, for messages. */
  files: string[];
}

/** One place to try for an image: a mirror or the registry itself. */
export interface PullSource {
  /** `host[:port]` */
  registry: string;
  repository: string;
  insecure: boolean;
  mirror: boolean;
}

export interface RegistriesConfPaths {
  file: string;
  dirs: string[];
}

/** The files Podman reads, in its order (containers/image sysregistriesv2). */
export function registriesConfPaths(opts: { registriesConf?: string; registriesConfDir?: string }, env = process.env, home = homedir()): RegistriesConfPaths {
  const userFile = join(home, '.config', 'containers', 'registries.conf');
  const userDir = join(home, '.config', 'containers', 'registries.conf.d');
  const explicit = opts.registriesConf ?? env.CONTAINERS_REGISTRIES_CONF ?? env.REGISTRIES_CONFIG_PATH;
  if (!explicit && existsSync(userFile)) return { file: userFile, dirs: [opts.registriesConfDir ?? userDir] };
  const file = explicit || '/etc/containers/registries.conf';
  return { file, dirs: opts.registriesConfDir !== undefined ? [opts.registriesConfDir] : ['/etc/containers/registries.conf.d', userDir] };
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw new SourceError(`cannot read ${path}: ${(e as Error).message}`, undefined, { cause: e });
  }
}

async function dropIns(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((f) => f.endsWith('.conf')).sort().map((f) => join(dir, f));
  } catch {
    return [];
  }
}

export async function loadRegistriesConf(paths: RegistriesConfPaths): Promise<RegistriesConf> {
  const conf: RegistriesConf = { registries: [], files: [] };
  const files = [paths.file];
  for (const d of paths.dirs) files.push(...(await dropIns(d)));
  for (const file of files) {
    const text = await readIfExists(file);
    if (text === undefined) continue;
    conf.files.push(file);
    // A later file's setting replaces an earlier one, as does its entry for the same prefix (registries.conf.d(5)).
    const helpers = parseCredentialHelpers(text, file);
    if (helpers) conf.credentialHelpers = { helpers, file };
    for (const r of parseRegistriesConf(text, file)) {
      const i = conf.registries.findIndex((x) => x.prefix === r.prefix);
      if (i >= 0) conf.registries[i] = r;
      else conf.registries.push(r);
    }
  }
  return conf;
}

type Table = Record<string, unknown>;

function bool(v: unknown, what: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new SourceError(`${what}: expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function str(v: unknown, what: string): string {
  if (v === undefined) return '';
  if (typeof v !== 'string') throw new SourceError(`${what}: expected a string, got ${JSON.stringify(v)}`);
  return v.replace(/^(https?:\/\/)/, '').replace(/\/+$/, '');
}

function parseTomlFile(text: string, file: string): Table {
  try {
    return parseToml(text) as Table;
  } catch (e) {
    throw new SourceError(`${file}: invalid TOML: ${(e as Error).message}`, undefined, { cause: e });
  }
}

/** The name that stands for the auth files in `credential-helpers`. */
export const AUTH_FILES_HELPER = 'containers-auth.json';

/** `credential-helpers = [...]` of one file, if it sets a non-empty list. */
export function parseCredentialHelpers(text: string, file: string): string[] | undefined {
  const v = parseTomlFile(text, file)['credential-helpers'];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((h) => typeof h !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(h)))
    throw new SourceError(`${file}: credential-helpers must be a list of helper names (e.g. ["${AUTH_FILES_HELPER}", "secretservice"])`);
  return v.length ? (v as string[]) : undefined;
}

export function parseRegistriesConf(text: string, file: string): RegistryConfig[] {
  const doc = parseTomlFile(text, file);
  const out: RegistryConfig[] = [];
  const v1 = doc.registries as Table | undefined;
  if (v1 && typeof v1 === 'object' && !Array.isArray(v1)) {
    if (doc.registry) throw new SourceError(`${file}: mixes the v1 [registries.*] tables with v2 [[registry]] entries`);
    const list = (k: string): string[] => ((v1[k] as Table | undefined)?.registries as string[] | undefined) ?? [];
    const entry = (host: string): RegistryConfig => {
      let r = out.find((x) => x.prefix === host);
      if (!r) out.push((r = { prefix: host, location: host, insecure: false, blocked: false, mirrorByDigestOnly: false, mirrors: [] }));
      return r;
    };
    for (const h of list('insecure')) entry(str(h, `${file}: registries.insecure`)).insecure = true;
    for (const h of list('block')) entry(str(h, `${file}: registries.block`)).blocked = true;
    return out;
  }
  const regs = doc.registry;
  if (regs === undefined) return out;
  if (!Array.isArray(regs)) throw new SourceError(`${file}: "registry" must be an array of tables ([[registry]])`);
  regs.forEach((raw, i) => {
    const r = raw as Table;
    const what = `${file}: [[registry]] #${i + 1}`;
    const location = str(r.location, `${what} location`);
    const prefix = str(r.prefix, `${what} prefix`) || location;
    if (!prefix) throw new SourceError(`${what}: needs a location or a prefix`);
    if (prefix.startsWith('*.') && location) throw new SourceError(`${what}: a wildcard prefix ${prefix} cannot have a location`);
    const mirrors = ((r.mirror as Table[] | undefined) ?? []).map((m, j) => {
      const mw = `${what} mirror #${j + 1}`;
      const ml = str(m.location, `${mw} location`);
      if (!ml) throw new SourceError(`${mw}: needs a location`);
      const pfm = (m['pull-from-mirror'] ?? 'all') as PullFromMirror;
      if (pfm !== 'all' && pfm !== 'digest-only' && pfm !== 'tag-only') throw new SourceError(`${mw}: pull-from-mirror must be all, digest-only or tag-only`);
      return { location: ml, insecure: bool(m.insecure, `${mw} insecure`), pullFromMirror: pfm };
    });
    out.push({
      prefix,
      location,
      insecure: bool(r.insecure, `${what} insecure`),
      blocked: bool(r.blocked, `${what} blocked`),
      mirrorByDigestOnly: bool(r['mirror-by-digest-only'], `${what} mirror-by-digest-only`),
      mirrors,
    });
  });
  return out;
}

/** Length of `prefix` matched in `name` (host/repo), or -1. */
function matchLength(name: string, prefix: string): number {
  if (prefix.startsWith('*.')) {
    const host = name.split('/')[0]!;
    return host.endsWith(prefix.slice(1)) ? host.length : -1;
  }
  if (name === prefix) return prefix.length;
  if (name.startsWith(prefix) && '/:@'.includes(name[prefix.length]!)) return prefix.length;
  return -1;
}

/** The entry with the longest matching prefix, and how much of `name` it matched. */
export function findRegistry(conf: RegistriesConf, name: string): { registry: RegistryConfig; matched: number } | undefined {
  let best: { registry: RegistryConfig; matched: number } | undefined;
  for (const r of conf.registries) {
    const n = matchLength(name, r.prefix);
    if (n >= 0 && (!best || n > best.matched)) best = { registry: r, matched: n };
  }
  return best;
}

function splitLocation(location: string, insecure: boolean, mirror: boolean): PullSource {
  const slash = location.indexOf('/');
  if (slash < 0) throw new SourceError(`registries.conf location ${JSON.stringify(location)} has no repository part`);
  return { registry: location.slice(0, slash), repository: location.slice(slash + 1), insecure, mirror };
}

/** Where to pull `ref` from, in order: the mirrors, then the (possibly rewritten) registry. */
export function pullSources(conf: RegistriesConf, ref: DockerReference): PullSource[] {
  const name = `${ref.registry}/${ref.repository}`;
  const found = findRegistry(conf, name);
  if (!found) return [{ registry: ref.registry, repository: ref.repository, insecure: false, mirror: false }];
  const { registry: reg, matched } = found;
  if (reg.blocked)
    throw new SourceError(`registry ${ref.registry} is blocked by the entry for ${JSON.stringify(reg.prefix)} in registries.conf (${conf.files.join(', ')})`);
  const rest = name.slice(matched);
  const byDigest = ref.digest !== undefined;
  const sources: PullSource[] = [];
  if (byDigest || !reg.mirrorByDigestOnly) {
    for (const m of reg.mirrors) {
      if ((m.pullFromMirror === 'digest-only' && !byDigest) || (m.pullFromMirror === 'tag-only' && byDigest)) continue;
      sources.push(splitLocation(m.location + rest, m.insecure, true));
    }
  }
  sources.push(splitLocation((reg.location || name.slice(0, matched)) + rest, reg.insecure, false));
  return sources;
}
