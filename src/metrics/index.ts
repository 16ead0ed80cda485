export { type CacheTier, meteredBlob, metrics, registry } from './metrics.js';
export { metricsAddressFor, type MetricsServer, startMetricsServer, STORE_METRICS_ADDRESS } from './server.js';
