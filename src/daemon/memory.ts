/**
 * Handing garbage back to the system once a burst of allocation is over. Parsing a TOC
 * allocates several times what the finished tree keeps (the JSON text, its raw objects);
 * V8 keeps that heap reserved until allocation pressure forces a full collection, which an
 * idle daemon never sees. A full collection shortly after the burst returns it. And glibc keeps
 * what the daemon's threads free resident until malloc_trim (returnMemoryWhenIdle).
 */
import { setFlagsFromString } from 'node:v8';
import type { Logger } from 'pino';
import { loadFuseDev } from '../fs/session/native.js';
import { fullGc } from '../full-gc.js';

let pending: NodeJS.Timeout | undefined;
/** When collectGarbageSoon or returnMemoryWhenIdle last ran a full collection (Date.now()). */
let lastFullGc = -Infinity;

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
    lastFullGc = Date.now();
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
 * of its bursts. MALLOC_ARENA_MAX=2 in a store's environment measured about 15 MB less resident
 * after a container start; mallopt does the same from inside, for threads without an arena yet.
 */
const MALLOC_ARENAS = 2;
/**
 * Blocks this large or larger get a mapping of their own, unmapped when freed. glibc's default
 * threshold slides up to the size of each mapped block freed (to 32 MiB), so a TOC's JSON text
 * and its parsing buffers land in the arenas between blocks that stay, and their pages stay
 * resident. Ten 10k-entry images in one store held 164-176 MB, 154-159 with 4 MiB fixed from the
 * start. 128 KiB (glibc's starting point) held 151-156, but cold reads from loopback fell from
 * 157-189 MB/s to 120-145, each decompressed chunk mapped and faulted in afresh; with 4 MiB they
 * read 169 MB/s against 170-179 in the same hour.
 */
const MALLOC_MMAP_THRESHOLD = 4 * 1024 ** 2;
/** How often the trimmer looks at the process. */
const TRIM_CHECK_MS = 1000;
/** CPU time within one check below which the daemon counts as idle. */
const IDLE_CPU_US = 50_000;
/**
 * Free memory in glibc's arenas that calls for a trim, busy or not. Well above what a
 * streaming read keeps free between its chunks: trimming after every busy second made a cold
 * read at 130 MB/s fault in afresh what it freed, some 15 % of its speed.
 */
const TRIM_FREE_BYTES = 32 * 1024 ** 2;
/** Full collections when a burst ends, at most one per this long. */
const IDLE_GC_EVERY_MS = 5000;

/**
 * Bounds what glibc keeps (MALLOC_ARENAS, MALLOC_MMAP_THRESHOLD), first thing in every daemon
 * (cli/entry.ts): the same threshold set once the store had loaded its modules left it 8-10 MB
 * larger with the ten images. Needs tocfs's addon (returnMemoryWhenIdle says when it is missing).
 */
export function tuneMalloc(): void {
  const dev = loadFuseDev();
  if (!('mallocTrim' in dev)) return;
  dev.limitMallocArenas(MALLOC_ARENAS);
  dev.setMallocMmapThreshold(MALLOC_MMAP_THRESHOLD);
}

/** malloc_trim(0) through tocfs's addon; nothing without it. */
function trimMalloc(): void {
  const dev = loadFuseDev();
  if ('mallocTrim' in dev) dev.mallocTrim();
}

/**
 * Gives a daemon's free memory back to the system as it piles up. Decompressed chunks,
 * response bodies and parsed JSON are freed into glibc's arenas, and glibc keeps most of it
 * resident; the Buffers of chunks written to the cache are not even freed until V8 next
 * collects, which an idle daemon's small heap does not call for. A store that had replayed a
 * start-up profile held 170-178 MB after the container started, 120 after a full collection
 * and malloc_trim(0) (12-23 ms). So (with tuneMalloc's bounds): malloc_trim(0) (0.1-5 ms)
 * each second glibc holds 32 MiB free or more; and once a second with 50 ms of CPU or more is
 * followed by one with less, a full collection (unless one ran, here or in collectGarbageSoon,
 * after that busy second or less than 5 s ago) and malloc_trim(0).
 * Trimming needs tocfs's addon (native/fuse_dev.c); without it only the collection runs.
 * Returns a function that stops it.
 */
export function returnMemoryWhenIdle(log: Logger): () => void {
  const loaded = loadFuseDev();
  const dev = 'mallocTrim' in loaded ? loaded : undefined;
  if (!dev) log.debug({ why: 'unavailable' in loaded ? loaded.unavailable : '' }, 'malloc left untuned and untrimmed');
  let lastCpu = process.cpuUsage();
  let lastBusy = -Infinity;
  const timer = setInterval(() => {
    const used = process.cpuUsage(lastCpu);
    lastCpu = process.cpuUsage();
    const busy = used.user + used.system >= IDLE_CPU_US;
    const now = Date.now();
    if (busy) lastBusy = now;
    const burstOver = !busy && lastBusy > lastFullGc && now - lastFullGc >= IDLE_GC_EVERY_MS;
    if (!burstOver && !(dev && dev.mallocFreeBytes() >= TRIM_FREE_BYTES)) return;
    const rss = process.memoryUsage.rss();
    const started = performance.now();
    const gc = burstOver ? fullGc() : undefined;
    if (gc) {
      gc();
      lastFullGc = Date.now();
    }
    dev?.mallocTrim();
    log.trace({ ms: Math.round(performance.now() - started), collected: gc !== undefined, rssBeforeMB: Math.round(rss / 1e6), rssAfterMB: Math.round(process.memoryUsage.rss() / 1e6) }, 'gave free memory back');
  }, TRIM_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
