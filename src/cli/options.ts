import type { Argv } from 'yargs';
import { parsePlatform } from '../image/manifest.js';
import type { SourceOptions } from '../image/open.js';
import type { OpenImageOptions } from '../image/image.js';
import { currentConfig, settingOption } from '../config/index.js';

/** Options shared by every command that reads images. */
export function withImageOptions<T>(y: Argv<T>) {
  return y
    .option('tls-verify', { type: 'boolean', default: true, describe: 'Require HTTPS and verify certificates when talking to registries (like podman --tls-verify)' })
    .option('platform', { type: 'string', describe: 'Platform to pick from a multi-platform image, os/arch[/variant] (default: this host)' });
}

export function sourceOptions(argv: { 'tls-verify'?: boolean; platform?: string }): SourceOptions {
  return {
    tlsVerify: argv['tls-verify'] !== false,
    ...(argv.platform ? { platform: parsePlatform(argv.platform) } : {}),
  };
}

/** `--cache-dir`, for commands that read file contents (the chunk cache and stored TOCs). */
export function withCacheOptions<T>(y: Argv<T>) {
  return y.option('cache-dir', settingOption('cache.dir'));
}

/** openImage options from the flags and the effective configuration (flags > env > file > defaults). */
export function openImageOptions(argv: { 'tls-verify'?: boolean; platform?: string }): OpenImageOptions {
  const { values: v, origins } = currentConfig();
  const source = sourceOptions(argv);
  // Left at their defaults, the registry client's own lookups (env, standard files) apply.
  const given = (key: keyof typeof origins): boolean => origins[key].source !== 'default';
  return {
    ...(source.tlsVerify !== undefined ? { tlsVerify: source.tlsVerify } : {}),
    ...(source.platform ? { platform: source.platform } : {}),
    cacheDir: v['cache.dir'],
    cacheMaxBytes: v['cache.max_size'],
    cacheMemoryBytes: v['cache.memory_size'],
    fetch: { maxRequestBytes: v['fetch.max_request_bytes'], readAhead: v['fetch.read_ahead'], maxInFlight: v['fetch.concurrency'] },
    registry: {
      ...(v['registry.registries_conf'] ? { registriesConf: v['registry.registries_conf'] } : {}),
      ...(v['registry.auth_file'] ? { authFile: v['registry.auth_file'] } : {}),
      ...(given('registry.certs_dir') ? { certsDir: v['registry.certs_dir'] } : {}),
      connections: v['registry.connections'],
      retry: { attempts: v['registry.retries'] + 1 },
    },
  };
}
