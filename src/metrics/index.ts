export { type CacheTier, meteredBlob, metrics, registry } from './metrics.js';
export { metricsAddressFor, STORE_METRICS_ADDRESS } from './address.js';
export { type MetricsServer, startMetricsServer } from './server.js';
