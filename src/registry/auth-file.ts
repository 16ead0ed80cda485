/**
 * Credentials as containers-auth.json(5) describes them: `auths` keyed by registry,
 * registry/namespace or (Docker's legacy form) a URL; `auth` is base64 `user:password`,
 * `identitytoken` an OAuth2 refresh token. `credHelpers` names a docker-credential-NAME
 * program per registry and Docker's `credsStore` one for every other registry.
 *
 * Each file in turn, as Podman reads them: a `credHelpers` entry for the registry decides
 * for that file (its `auths` are not read); otherwise the `auths` keys, most specific
 * first; then, as Docker does, the file's `credsStore`. A helper that has nothing for the
 * registry sends the search on to the next file; a helper that fails stops it.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SourceError } from '../errors.js';
import { DOCKER_HUB } from '../reference.js';
import { helperGet, helperProgram } from './cred-helper.js';
import { AUTH_FILES_HELPER } from './registries-conf.js';

export interface Credentials {
  username: string;
  password: string;
  identityToken?: string;
  /** The file and key they came from (for messages; never the secret). */
  source: string;
}

/**
 * The files Podman reads, in order: an explicit file (`--authfile`, $REGISTRY_AUTH_FILE)
 * alone; otherwise ${XDG_RUNTIME_DIR}/containers/auth.json (/run/containers/UID/auth.json),
 * $XDG_CONFIG_HOME/containers/auth.json, $DOCKER_CONFIG/config.json or ~/.docker/config.json.
 */
export function authFilePaths(explicit: string | undefined, env = process.env, home = homedir()): string[] {
  const chosen = explicit ?? env.REGISTRY_AUTH_FILE;
  if (chosen) return [chosen];
  const uid = process.getuid?.() ?? 0;
  return [
    env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json') : `/run/containers/${uid}/auth.json`,
    join(env.XDG_CONFIG_HOME || join(home, '.config'), 'containers', 'auth.json'),
    env.DOCKER_CONFIG ? join(env.DOCKER_CONFIG, 'config.json') : join(home, '.docker', 'config.json'),
  ];
}

/** A legacy key (`https://index.docker.io/v1/`, `http://host:5000`) reduced to the registry it names. */
function normaliseLegacyKey(key: string): string {
  const host = key.replace(/^https?:\/\//, '').split('/')[0]!;
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? DOCKER_HUB : host;
}

/** Keys to try, most specific first: host/ns/repo, host/ns, host. */
function candidateKeys(registry: string, repository: string): string[] {
  const parts = repository.split('/');
  const keys: string[] = [];
  for (let i = parts.length; i > 0; i--) keys.push(`${registry}/${parts.slice(0, i).join('/')}`);
  keys.push(registry);
  return keys;
}

function decodeEntry(entry: Record<string, unknown>, source: string): Credentials | undefined {
  const identityToken = typeof entry.identitytoken === 'string' && entry.identitytoken ? entry.identitytoken : undefined;
  let username = '';
  let password = '';
  if (typeof entry.auth === 'string' && entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new SourceError(`${source}: "auth" is not base64 of user:password`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  } else if (typeof entry.username === 'string' && typeof entry.password === 'string') {
    username = entry.username;
    password = entry.password;
  }
  if (!username && !identityToken) return undefined;
  return { username, password, ...(identityToken ? { identityToken } : {}), source };
}

interface AuthFile {
  auths: Record<string, Record<string, unknown>>;
  credHelpers: Record<string, string>;
  credsStore?: string;
}

async function readAuthFile(path: string): Promise<AuthFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new SourceError(`cannot read auth file ${path}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    // The parser's message may quote file content; say only where.
    throw new SourceError(`auth file ${path} is not valid JSON`);
  }
  const d = (doc && typeof doc === 'object' ? doc : {}) as { auths?: unknown; credHelpers?: unknown; credsStore?: unknown };
  const credHelpers: Record<string, string> = {};
  if (d.credHelpers !== undefined) {
    if (!d.credHelpers || typeof d.credHelpers !== 'object') throw new SourceError(`auth file ${path}: "credHelpers" must map registries to helper names`);
    for (const [registry, name] of Object.entries(d.credHelpers)) {
      if (typeof name !== 'string') throw new SourceError(`auth file ${path}: credHelpers[${JSON.stringify(registry)}] must be a helper name (a string)`);
      credHelpers[registry] = name;
    }
  }
  if (d.credsStore !== undefined && typeof d.credsStore !== 'string') throw new SourceError(`auth file ${path}: "credsStore" must be a helper name (a string)`);
  return {
    auths: d.auths && typeof d.auths === 'object' ? (d.auths as Record<string, Record<string, unknown>>) : {},
    credHelpers,
    ...(d.credsStore ? { credsStore: d.credsStore } : {}),
  };
}

/** Whether a `credHelpers` key names `registry`: the registry itself, or Docker's URL form of it (never a namespace). */
function helperKeyNames(key: string, registry: string): boolean {
  if (key === registry) return true;
  const isUrl = /^https?:\/\//.test(key);
  return (isUrl || !key.includes('/')) && normaliseLegacyKey(key) === registry;
}

async function fromHelper(name: string, registry: string, from: string): Promise<Credentials | undefined> {
  const c = await helperGet(name, registry, from);
  return c && { ...c, source: `${helperProgram(name)} (${from})` };
}

/** Credentials for `registry`/`repository` from `path`'s `auths` entries. */
function fromAuths(auths: AuthFile['auths'], path: string, registry: string, repository: string): Credentials | undefined {
  for (const key of candidateKeys(registry, repository)) {
    const entry = auths[key];
    if (entry && typeof entry === 'object') {
      const c = decodeEntry(entry, `${path} (${key})`);
      if (c) return c;
    }
  }
  for (const [key, entry] of Object.entries(auths)) {
    if (entry && typeof entry === 'object' && (/^https?:\/\//.test(key) || registry === DOCKER_HUB) && normaliseLegacyKey(key) === registry) {
      const c = decodeEntry(entry, `${path} (${key})`);
      if (c) return c;
    }
  }
  return undefined;
}

/** Credentials for `registry`/`repository` from the first file that has any (see the order above). */
export async function findCredentials(paths: string[], registry: string, repository: string): Promise<Credentials | undefined> {
  for (const path of paths) {
    const file = await readAuthFile(path);
    if (!file) continue;
    const helperKey = Object.keys(file.credHelpers).find((k) => k === registry) ?? Object.keys(file.credHelpers).find((k) => helperKeyNames(k, registry));
    if (helperKey !== undefined) {
      const c = await fromHelper(file.credHelpers[helperKey]!, registry, `credHelpers[${JSON.stringify(helperKey)}] in ${path}`);
      if (c) return c;
      continue;
    }
    const c = fromAuths(file.auths, path, registry, repository) ?? (file.credsStore ? await fromHelper(file.credsStore, registry, `credsStore in ${path}`) : undefined);
    if (c) return c;
  }
  return undefined;
}

/**
 * Credentials as Podman looks them up: each of registries.conf's `credential-helpers` in
 * order (the auth files for `containers-auth.json`, else docker-credential-NAME); the first
 * that has some wins. A failing one is passed over for the next, and its error reported
 * only if none has credentials.
 */
export async function lookupCredentials(
  configured: { helpers: string[]; file: string } | undefined,
  paths: string[],
  registry: string,
  repository: string,
): Promise<Credentials | undefined> {
  const helpers = configured?.helpers ?? [AUTH_FILES_HELPER];
  const errors: Error[] = [];
  for (const h of helpers) {
    try {
      const c = h === AUTH_FILES_HELPER ? await findCredentials(paths, registry, repository) : await fromHelper(h, registry, `credential-helpers in ${configured!.file}`);
      if (c) return c;
    } catch (e) {
      errors.push(e as Error);
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new SourceError(`no credentials for ${registry}: ${errors.map((e) => e.message).join('; ')}`);
  return undefined;
}
