/**
 * Handing garbage back to the system once a burst of allocation is over. Parsing a TOC
 * allocates several times what the finished tree keeps (the JSON text, its raw objects);
 * V8 keeps that heap reserved until allocation pressure forces a full collection, which an
 * idle daemon never sees. A full collection shortly after the burst returns it.
 */
import { setFlagsFromString } from 'node:v8';
import type { Logger } from 'pino';
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
