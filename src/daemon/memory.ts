/**
 * Handing garbage back to the system once a burst of allocation is over. Parsing a TOC
 * allocates several times what the finished tree keeps (the JSON text, its raw objects);
 * V8 keeps that heap reserved until allocation pressure forces a full collection, which an
 * idle daemon never sees. A full collection shortly after the burst returns it.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from 'pino';

let collect: (() => void) | undefined;
let pending: NodeJS.Timeout | undefined;
let firstAsked = 0;

function fullGc(): (() => void) | undefined {
  if (!collect) {
    try {
      setFlagsFromString('--expose-gc');
      collect = runInNewContext('gc') as () => void;
    } catch {
      return undefined;
    }
  }
  return collect;
}

/**
 * Runs one full collection once `quietMs` pass without another call, or `maxWaitMs` after
 * the first call at the latest. Never keeps the process alive.
 */
export function collectGarbageSoon(log: Logger, quietMs = 500, maxWaitMs = 3000): void {
  const now = Date.now();
  if (pending) clearTimeout(pending);
  else firstAsked = now;
  pending = setTimeout(() => {
    pending = undefined;
    const gc = fullGc();
    if (!gc) return;
    const before = process.memoryUsage.rss();
    const started = performance.now();
    gc();
    log.debug({ ms: Math.round(performance.now() - started), rssBeforeMB: Math.round(before / 1e6), rssAfterMB: Math.round(process.memoryUsage.rss() / 1e6) }, 'collected the garbage of loading TOCs');
  }, Math.max(0, Math.min(quietMs, firstAsked + maxWaitMs - now)));
  pending.unref();
}
