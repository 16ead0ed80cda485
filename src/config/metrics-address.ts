/** Where a daemon serves its metrics; kept apart from the server so the CLI can ask without loading prom-client. */
import type { LoadedConfig } from './load.js';

/** Where `tocfs store` serves metrics when metrics.address is not set anywhere (issue #8: on for the store, off for mount). */
export const STORE_METRICS_ADDRESS = '127.0.0.1:9464';

/**
 * The address a daemon should serve metrics on, or undefined for none: metrics.address when
 * set by flag, environment or file (an explicit "" turns them off), else on for the store
 * and off for mounts.
 */
export function metricsAddressFor(daemon: 'mount' | 'store', config: Pick<LoadedConfig, 'values' | 'origins'>): string | undefined {
  const address = config.origins['metrics.address'].source === 'default' && daemon === 'store' ? STORE_METRICS_ADDRESS : config.values['metrics.address'];
  return address === '' ? undefined : address;
}
