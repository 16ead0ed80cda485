/** The memory tier's size by daemon (cache.memory_size), kept apart so the CLI can ask cheaply. */
import type { LoadedConfig } from './load.js';

/**
 * `tocfs store`'s memory tier when cache.memory_size is set nowhere. The store's readers are
 * containers, whose reads stay in the kernel's page cache (and complete files are read by
 * passthrough from the cache's own files): what the tier keeps beyond chunks fetched ahead of
 * a read is a second copy, and a tier of 1/16 of RAM (up to 1 GiB) grows into such copies over
 * a store's life. With 1 GiB it held 28-34 MB after a Python start; 16M kept the same hits
 * (169 of 243 lookups) and the same start-up times.
 */
export const STORE_MEMORY_TIER_BYTES = 16 * 1024 ** 2;

/** cache.memory_size when set by flag, environment or file; else the default, or STORE_MEMORY_TIER_BYTES for the store. */
export function memoryTierFor(daemon: 'mount' | 'store', config: Pick<LoadedConfig, 'values' | 'origins'>): number {
  return config.origins['cache.memory_size'].source === 'default' && daemon === 'store' ? STORE_MEMORY_TIER_BYTES : config.values['cache.memory_size'];
}
