export { type CacheTier, meteredBlob, metrics, registry } from './metrics.js';
export { type MetricsServer, startMetricsServer } from './server.js';
