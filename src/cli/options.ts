import type { Argv } from 'yargs';
import { parsePlatform } from '../source/manifest.js';
import type { SourceOptions } from '../image/open.js';
import type { ProfileSettings } from '../profile/session.js';
import type { OpenImageOptions } from '../image/image.js';
import { currentConfig, settingOption } from '../config/index.js';

/** Options shared by every command that reads images. */
export function withImageOptions<T>(y: Argv<T>) {
  return y
    .option('tls-verify', settingOption('registry.tls_verify'))
    .option('platform', { type: 'string', describe: 'Platform to pick from a multi-platform image, os/arch[/variant] (default: this host)' });
}

/**
 * Where and how to read images, from `--platform` and the effective configuration (flags >
 * TOCFS_* environment > config file > defaults): TLS, registries.conf, auth file, certs.d,
 * connections, retries and the stall timeout. Every command that reads images uses it.
 */
export function sourceOptions(argv: { platform?: string }): SourceOptions {
  const { values: v, origins } = currentConfig();
  // Left at their defaults, the registry client's own lookups (env, standard files) apply.
  const given = (key: keyof typeof origins): boolean => origins[key].source !== 'default';
  return {
    tlsVerify: v['registry.tls_verify'],
    ...(argv.platform ? { platform: parsePlatform(argv.platform) } : {}),
    registry: {
      ...(v['registry.registries_conf'] ? { registriesConf: v['registry.registries_conf'] } : {}),
      ...(v['registry.auth_file'] ? { authFile: v['registry.auth_file'] } : {}),
      ...(given('registry.certs_dir') ? { certsDir: v['registry.certs_dir'] } : {}),
      connections: v['registry.connections'],
      retry: { attempts: v['registry.retries'] + 1 },
      timeouts: { connectMs: v['registry.stall_timeout'], stallMs: v['registry.stall_timeout'] },
    },
  };
}

/** `--cache-dir`, for commands that read file contents (the chunk cache and stored TOCs). */
export function withCacheOptions<T>(y: Argv<T>) {
  return y.option('cache-dir', settingOption('cache.dir'));
}

/** openImage options: sourceOptions plus the cache and fetch settings. */
export function openImageOptions(argv: { platform?: string }): OpenImageOptions {
  const v = currentConfig().values;
  return {
    ...sourceOptions(argv),
    cacheDir: v['cache.dir'],
    cacheMaxBytes: v['cache.max_size'],
    cacheMemoryBytes: v['cache.memory_size'],
    memoryBudget: v['daemon.memory'],
    fetch: { maxRequestBytes: v['fetch.max_request_bytes'], maxGapBytes: v['fetch.max_gap'], readAhead: v['fetch.read_ahead'], maxInFlight: v['fetch.concurrency'], neighbourBytes: v['fetch.neighbours'], fetchTimeoutMs: v['fetch.timeout'] },
    checkpointSpacing: v['index.checkpoint_spacing'],
    indexCheckDelayMs: v['index.check_delay'],
    index: { trust: v['index.trust'], publish: v['index.publish'] },
  };
}

/** Start-up profile settings (profile.*). */
export function profileSettings(): ProfileSettings {
  const v = currentConfig().values;
  return { record: v['profile.record'], replay: v['profile.replay'], idleMs: v['profile.idle'], windowMs: v['profile.window'], maxBytes: v['profile.max_bytes'], maxRequests: v['profile.max_requests'] };
}
