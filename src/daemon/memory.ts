/**
 * Handing garbage back to the system once a burst of allocation is over. Parsing a TOC
 * allocates several times what the finished tree keeps (the JSON text, its raw objects);
 * V8 keeps that heap reserved until allocation pressure forces a full collection, which an
 * idle daemon never sees. A full collection shortly after the burst returns it.
 */
import { setFlagsFromString } from 'node:v8';
import type { Logger } from 'pino';
import { loadFuseDev } from '../fs/session/native.js';
import { fullGc } from '../full-gc.js';

let pending: NodeJS.Timeout | undefined;

/** Runs one full collection `delayMs` from now (calls in between share it); never keeps the process alive. */
export function collectGarbageSoon(log: Logger, delayMs = 500): void {
  if (pending) return;
  pending = setTimeout(() => {
    pending = undefined;
    const gc = fullGc();
    if (!gc) return;
    const before = process.memoryUsage.rss();
    const started = performance.now();
    gc();
    trimMalloc();
    log.debug({ ms: Math.round(performance.now() - started), rssBeforeMB: Math.round(before / 1e6), rssAfterMB: Math.round(process.memoryUsage.rss() / 1e6) }, 'collected the garbage of loading TOCs');
  }, delayMs);
  pending.unref();
}

/**
 * Keeps V8's young generation at its initial size. Parsing TOCs grows it to its 16 MiB
 * semispaces, and V8 never shrinks it again: 30-50 MB of an idle store's resident memory.
 * Loading TOCs takes some 10-20 % longer for it (more scavenges).
 */
export function keepYoungGenerationSmall(log: Logger): void {
  try {
    setFlagsFromString('--semi-space-growth-factor=1');
  } catch (err) {
    log.debug({ err }, 'cannot limit the young generation');
  }
}

/**
 * glibc's arenas a daemon allows its threads (libuv's pool decompresses and hashes, the
 * writer thread writes the cache): by default up to 8 per core, each keeping the free memory
 * of its bursts. Two measured 15 MB less resident for a store after a container start.
 */
const MALLOC_ARENAS = 2;
/** How often the trimmer looks at the process. */
const TRIM_CHECK_MS = 1000;
/** CPU time within one check below which the daemon counts as idle. */
const IDLE_CPU_US = 50_000;
/** Growth of RSS since the last trim that calls for another, busy or not. */
const TRIM_GROWTH_BYTES = 8 * 1024 ** 2;

/** malloc_trim(0) through tocfs's addon; false without it. */
function trimMalloc(): boolean {
  const dev = loadFuseDev();
  return 'mallocTrim' in dev && dev.mallocTrim();
}

/**
 * Tunes glibc's malloc for a long-running daemon: fewer arenas, and free memory given back
 * as it piles up. Decompressed chunks, response bodies and parsed JSON are freed into the
 * arenas of the threads that made them, and glibc keeps most of it resident: a store held
 * 36-54 MB of such free memory after a container start (malloc_trim(0) took 1-5 ms to give it
 * back). So malloc_trim(0) runs each second in which RSS has grown by 8 MiB since the last
 * trim, and once a busier second is followed by an idle one. Needs tocfs's addon
 * (native/fuse_dev.c); without it, does nothing. Returns a function that stops the trimmer.
 */
export function tuneMallocForDaemon(log: Logger): () => void {
  const dev = loadFuseDev();
  if (!('mallocTrim' in dev)) {
    log.debug({ why: dev.unavailable }, 'malloc left untuned');
    return () => undefined;
  }
  dev.limitMallocArenas(MALLOC_ARENAS);
  let lastCpu = process.cpuUsage();
  let busySinceTrim = false;
  let rssAfterTrim = process.memoryUsage.rss();
  const timer = setInterval(() => {
    const used = process.cpuUsage(lastCpu);
    lastCpu = process.cpuUsage();
    const busy = used.user + used.system >= IDLE_CPU_US;
    const rss = process.memoryUsage.rss();
    if (rss - rssAfterTrim < TRIM_GROWTH_BYTES && (busy || !busySinceTrim)) {
      busySinceTrim ||= busy;
      return;
    }
    const started = performance.now();
    dev.mallocTrim();
    busySinceTrim = false;
    rssAfterTrim = process.memoryUsage.rss();
    log.trace({ ms: Math.round(performance.now() - started), rssBeforeMB: Math.round(rss / 1e6), rssAfterMB: Math.round(rssAfterTrim / 1e6) }, 'gave free malloc memory back');
  }, TRIM_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
