/**
 * tocfs's Prometheus metrics, on a registry of its own (plus the default process metrics).
 * Others call the small functions of `metrics`; each is a few map lookups and an add, so they
 * are safe on hot paths. docs/metrics.md says where each one belongs.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry });

export type CacheTier = 'memory' | 'disk';

const fetchedBytes = new Counter({
  name: 'tocfs_fetched_bytes_total',
  help: 'Compressed bytes fetched from registries (or image layouts), by layer digest.',
  labelNames: ['layer'],
  registers: [registry],
});
const servedBytes = new Counter({ name: 'tocfs_served_bytes_total', help: 'Uncompressed bytes returned to readers (FUSE reads, cat).', registers: [registry] });
const cacheHits = new Counter({ name: 'tocfs_cache_hits_total', help: 'Chunk lookups answered by a cache tier.', labelNames: ['tier'], registers: [registry] });
const cacheMisses = new Counter({ name: 'tocfs_cache_misses_total', help: 'Chunk lookups a cache tier could not answer.', labelNames: ['tier'], registers: [registry] });
const chunkFetchSeconds = new Histogram({
  name: 'tocfs_chunk_fetch_duration_seconds',
  help: 'Time from requesting missing chunks to having them verified (one range request, however many chunks).',
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});
const verificationFailures = new Counter({
  name: 'tocfs_verification_failures_total',
  help: 'Content whose digest did not match the digest that vouches for it, by layer and kind (chunk, toc, blob).',
  labelNames: ['layer', 'kind'],
  registers: [registry],
});
const inFlight = new Gauge({ name: 'tocfs_registry_requests_in_flight', help: 'Registry HTTP requests under way.', registers: [registry] });
const registryErrors = new Counter({
  name: 'tocfs_registry_errors_total',
  help: 'Failed registry requests by HTTP status code, or "network" / "timeout" when there was no response.',
  labelNames: ['code'],
  registers: [registry],
});
const fuseSeconds = new Histogram({
  name: 'tocfs_fuse_operation_duration_seconds',
  help: 'FUSE operations by operation (its _count is the number of operations).',
  labelNames: ['op'],
  buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5],
  registers: [registry],
});
const fuseErrors = new Counter({ name: 'tocfs_fuse_errors_total', help: 'FUSE operations answered with an error, by operation and errno name.', labelNames: ['op', 'errno'], registers: [registry] });
const layerFetched = new Gauge({
  name: 'tocfs_layer_fetched_ratio',
  help: 'Share of a layer\'s compressed bytes present in the cache, 0 to 1 (percent = ratio x 100).',
  labelNames: ['layer'],
  registers: [registry],
});

/** Label children cached per value: `labels()` hashes its arguments on every call. */
function byLabel<C>(make: (value: string) => C): (value: string) => C {
  const children = new Map<string, C>();
  return (value) => {
    let c = children.get(value);
    if (c === undefined) children.set(value, (c = make(value)));
    return c;
  };
}

const fetchedFor = byLabel((layer) => fetchedBytes.labels(layer));
const hitsFor = byLabel((tier) => cacheHits.labels(tier));
const missesFor = byLabel((tier) => cacheMisses.labels(tier));
const fuseFor = byLabel((op) => fuseSeconds.labels(op));

const NS_PER_S = 1e9;
const since = (start: bigint) => Number(process.hrtime.bigint() - start) / NS_PER_S;

export const metrics = {
  /** `bytes` of layer `layer` (its digest) arrived from the registry. */
  fetched(layer: string, bytes: number): void {
    fetchedFor(layer).inc(bytes);
  },
  /** `bytes` of file content went back to a reader. */
  served(bytes: number): void {
    servedBytes.inc(bytes);
  },
  cacheHit(tier: CacheTier): void {
    hitsFor(tier).inc();
  },
  cacheMiss(tier: CacheTier): void {
    missesFor(tier).inc();
  },
  /** Starts timing one chunk fetch; call the result when its chunks are verified (or it failed). */
  startChunkFetch(): () => void {
    const start = process.hrtime.bigint();
    return () => chunkFetchSeconds.observe(since(start));
  },
  verificationFailed(layer: string, kind: 'chunk' | 'toc' | 'blob'): void {
    verificationFailures.labels(layer, kind).inc();
  },
  /** One registry request started; call the result exactly once when it ends, however it ends. */
  requestStarted(): () => void {
    inFlight.inc();
    let ended = false;
    return () => {
      if (!ended) inFlight.dec();
      ended = true;
    };
  },
  registryError(code: number | 'network' | 'timeout'): void {
    registryErrors.labels(String(code)).inc();
  },
  /** Starts timing FUSE operation `op`; call the result with the errno name (`'ENOENT'`) if it failed. */
  startFuseOp(op: string): (errno?: string) => void {
    const start = process.hrtime.bigint();
    return (errno) => {
      fuseFor(op).observe(since(start));
      if (errno) fuseErrors.labels(op, errno).inc();
    };
  },
  /** How much of layer `layer` is cached: `present` of `total` compressed bytes. */
  layerProgress(layer: string, present: number, total: number): void {
    layerFetched.labels(layer).set(total > 0 ? Math.min(1, present / total) : 1);
  },
  /** Drops a layer's own series (when its last mount or store entry goes away). */
  forgetLayer(layer: string): void {
    fetchedBytes.remove(layer);
    layerFetched.remove(layer);
  },
};

