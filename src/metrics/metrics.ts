/**
 * tocfs's Prometheus metrics, on a registry of its own (plus the default process metrics).
 * Others call the small functions of `metrics`; each is a few map lookups and an add, so they
 * are safe on hot paths. docs/metrics.md says where each one belongs.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { DigestMismatchError } from '../errors.js';
import { tapBlob } from '../source/tap.js';
import type { BlobReader } from '../source/types.js';

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
  help: 'Time from sending a range request for missing chunks to having all its chunks verified (one observation per request, however many chunks).',
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
  help: 'Failed registry requests by HTTP status code, or "network" / "timeout" / "stall" when there was no response.',
  labelNames: ['code'],
  registers: [registry],
});
const registryUp = new Gauge({
  name: 'tocfs_registry_up',
  help: 'Whether a registry host answers: 1, or 0 while it is down (a stall or refused connection a check confirmed, until a background check gets an answer).',
  labelNames: ['registry'],
  registers: [registry],
});
const registryOutages = new Counter({ name: 'tocfs_registry_outages_total', help: 'Times a registry host was found down.', labelNames: ['registry'], registers: [registry] });
const registryFailedFast = new Counter({
  name: 'tocfs_registry_failed_fast_total',
  help: 'Registry requests failed at once, without asking the registry, because it was down.',
  labelNames: ['registry'],
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
const passthroughOpens = new Counter({
  name: 'tocfs_fuse_passthrough_opens_total',
  help: 'Opens answered with FUSE passthrough onto a whole cached file (tocfs own FUSE session): the kernel reads those files without asking tocfs.',
  registers: [registry],
});
const profileReplayBytes = new Counter({ name: 'tocfs_profile_replay_bytes_total', help: 'Compressed bytes fetched ahead of reads by start-up profile replay.', registers: [registry] });
const profileReplayRequests = new Counter({ name: 'tocfs_profile_replay_requests_total', help: 'Range requests made by start-up profile replay.', registers: [registry] });
const memoryTier = new Gauge({ name: 'tocfs_memory_tier_bytes', help: 'Decompressed chunks held in the memory tier.', registers: [registry] });
const memoryTierLimit = new Gauge({ name: 'tocfs_memory_tier_limit_bytes', help: 'What the memory tier may hold now: cache.memory_size, or less to keep the daemon within daemon.memory.', registers: [registry] });
const layerFetched = new Gauge({
  name: 'tocfs_layer_fetched_ratio',
  help: 'Compressed bytes of a layer\'s chunks fetched by this process as a share of all its chunks\' bytes, 0 to 1 (percent = ratio x 100).',
  labelNames: ['layer'],
  registers: [registry],
});

/** Label children cached per value: `labels()` hashes its arguments on every call. */
function byLabel<C>(make: (value: string) => C): ((value: string) => C) & { forget(value: string): void } {
  const children = new Map<string, C>();
  const get = (value: string): C => {
    let c = children.get(value);
    if (c === undefined) children.set(value, (c = make(value)));
    return c;
  };
  return Object.assign(get, { forget: (value: string) => void children.delete(value) });
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
  /**
   * Starts timing one range request for `chunks` chunks. Call the result once per chunk as it
   * is verified or fails (the last call observes), or once with `failed` when the request failed.
   */
  startChunkFetch(chunks = 1): (failed?: boolean) => void {
    const start = process.hrtime.bigint();
    let left = chunks;
    return (failed) => {
      if (left <= 0) return;
      left = failed ? 0 : left - 1;
      if (left === 0) chunkFetchSeconds.observe(since(start));
    };
  },
  verificationFailed(layer: string, kind: 'chunk' | 'toc' | 'blob'): void {
    verificationFailures.labels(layer, kind).inc();
  },
  /** Counts `e` as a verification failure when it is a digest mismatch (for catch blocks that see other errors too). */
  ifMismatch(e: unknown, layer: string, kind: 'chunk' | 'toc' | 'blob'): void {
    if (e instanceof DigestMismatchError) verificationFailures.labels(layer, kind).inc();
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
  registryError(code: number | 'network' | 'timeout' | 'stall'): void {
    registryErrors.labels(String(code)).inc();
  },
  /** Registry host `host` answers (true) or is down (false); going down counts an outage. */
  registryUp(host: string, up: boolean): void {
    registryUp.labels(host).set(up ? 1 : 0);
    if (!up) registryOutages.labels(host).inc();
  },
  registryFailedFast(host: string): void {
    registryFailedFast.labels(host).inc();
  },
  /** Starts timing FUSE operation `op`; call the result with the errno name (`'ENOENT'`) if it failed. */
  startFuseOp(op: string): (errno?: string) => void {
    const start = process.hrtime.bigint();
    return (errno) => {
      fuseFor(op).observe(since(start));
      if (errno) fuseErrors.labels(op, errno).inc();
    };
  },
  /** An open was answered with FUSE passthrough. */
  passthroughOpened(): void {
    passthroughOpens.inc();
  },
  /** A start-up profile replay fetched `bytes` in `requests` range requests. */
  profileReplayed(bytes: number, requests: number): void {
    profileReplayBytes.inc(bytes);
    profileReplayRequests.inc(requests);
  },
  /** How much of layer `layer` this process fetched: `present` of `total` compressed chunk bytes. */
  layerProgress(layer: string, present: number, total: number): void {
    layerFetched.labels(layer).set(total > 0 ? Math.min(1, present / total) : 1);
  },
  /** The memory tier's size and limit (sampled with the process's RSS, cache/memory-budget.ts). */
  memoryTier(bytes: number, limit: number): void {
    memoryTier.set(bytes);
    memoryTierLimit.set(limit);
  },
  /** Drops a layer's own series (when its last mount or store entry goes away). */
  forgetLayer(layer: string): void {
    fetchedBytes.remove(layer);
    fetchedFor.forget(layer);
    layerFetched.remove(layer);
  },
};

/** `blob` with every byte it delivers (ranges and whole-blob streams) counted in tocfs_fetched_bytes_total. */
export function meteredBlob(blob: BlobReader): BlobReader {
  return tapBlob(blob, { bytes: (n) => fetchedFor(blob.digest).inc(n) });
}
