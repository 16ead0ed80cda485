/**
 * Registry client options that read only files under a test's temp dir (so the machine's
 * /etc/containers and ~/.docker cannot change a result) and retry quickly.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RegistryClientOptions } from '../../src/registry/options.js';

export const FAST_RETRY = { attempts: 4, baseDelayMs: 5, maxDelayMs: 50, maxRetryAfterMs: 5000 };

export async function isolatedRegistryOptions(dir: string, overrides: Partial<RegistryClientOptions> = {}): Promise<RegistryClientOptions> {
  await mkdir(join(dir, 'registries.conf.d'), { recursive: true });
  await mkdir(join(dir, 'certs.d'), { recursive: true });
  await writeFile(join(dir, 'registries.conf'), '', { flag: 'a' });
  return {
    registriesConf: join(dir, 'registries.conf'),
    registriesConfDir: join(dir, 'registries.conf.d'),
    authFile: join(dir, 'auth.json'),
    certsDir: join(dir, 'certs.d'),
    retry: FAST_RETRY,
    ...overrides,
  };
}

/** An auth.json (containers-auth.json(5)) with `user:password` for each key. */
export async function writeAuthFile(path: string, entries: Record<string, { username: string; password: string } | { identitytoken: string }>): Promise<void> {
  const auths: Record<string, Record<string, string>> = {};
  for (const [key, e] of Object.entries(entries)) {
    auths[key] = 'identitytoken' in e ? { identitytoken: e.identitytoken } : { auth: Buffer.from(`${e.username}:${e.password}`).toString('base64') };
  }
  await writeFile(path, JSON.stringify({ auths }, null, 2), { mode: 0o600 });
}

/** Runs `fn` with environment variable `name` set to `value`, restoring it afterwards. */
export async function withEnv<T>(name: string, value: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env[name];
  process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}

/** The same isolation for a `tocfs` child process: its registries.conf, auth file and certs.d under `dir`. */
export function isolatedCliEnv(dir: string): NodeJS.ProcessEnv {
  return { CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'), REGISTRY_AUTH_FILE: join(dir, 'auth.json'), TOCFS_CERTS_DIR: join(dir, 'certs.d') };
}
