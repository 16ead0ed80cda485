/**
 * Keeping a daemon within its resident memory budget (`daemon.memory`). Most of what a daemon
 * holds it cannot give back on demand: Node itself, the images' TOCs and trees, requests in
 * flight. The memory tier of the chunk cache it can: so the tier's limit follows the budget
 * minus everything else, measured from the process's RSS several times a second.
 */
import type { Logger } from 'pino';
import { fullGc } from '../full-gc.js';
import { metrics } from '../metrics/index.js';
import { formatSize } from '../units.js';

/** How often RSS is sampled. */
const SAMPLE_MS = 250;
/** The tier never shrinks below this: a read that spans two chunks still finds the first. */
export const MIN_TIER_BYTES = 4 * 1024 ** 2;
/** How often the "over budget" warning may repeat. */
const WARN_EVERY_MS = 5 * 60_000;
/** Full collections the budget may force, at most one per this long. */
const GC_EVERY_MS = 1000;

export interface MemoryTier {
  /** Bytes the tier holds now. */
  readonly bytes: number;
  /** Caps the tier at `bytes`, evicting the least recently used beyond it now. */
  limit(bytes: number): void;
}

/** Headroom below the budget for what arrives between two samples (requests in flight, a burst of reads). */
export function budgetHeadroom(budget: number): number {
  return Math.max(16 * 1024 ** 2, Math.floor(budget / 5));
}

export class ProcessMemoryBudget {
  private readonly timer: NodeJS.Timeout;
  private lastWarning = -Infinity;
  private lastGc = -Infinity;

  constructor(
    readonly budget: number,
    private readonly tier: MemoryTier,
    /** The tier's own cap (cache.memory_size): the budget never raises it beyond. */
    private readonly tierMax: number,
    private readonly log: Logger,
    private readonly rss: () => number = () => process.memoryUsage.rss(),
  ) {
    this.adjust();
    this.timer = setInterval(() => this.adjust(), SAMPLE_MS).unref();
  }

  /** Sets the tier's limit from the current RSS; returns the limit. */
  adjust(): number {
    let rss = this.rss();
    // Chunks the tier let go (and the buffers of reads and requests that ended) hold memory
    // until V8 collects them, which a busy daemon may put off past its budget: collect now.
    if (rss > this.budget - budgetHeadroom(this.budget) / 2 && Date.now() - this.lastGc > GC_EVERY_MS) {
      this.lastGc = Date.now();
      fullGc()?.();
      rss = this.rss();
    }
    const rest = Math.max(0, rss - this.tier.bytes);
    const room = this.budget - budgetHeadroom(this.budget) - rest;
    const limit = Math.min(this.tierMax, Math.max(MIN_TIER_BYTES, room));
    this.tier.limit(limit);
    metrics.memoryTier(this.tier.bytes, limit);
    if (room < MIN_TIER_BYTES && Date.now() - this.lastWarning > WARN_EVERY_MS) {
      this.lastWarning = Date.now();
      this.log.warn(
        { budget: this.budget, rss, tierBytes: this.tier.bytes },
        `tocfs holds ${formatSize(rest)} besides its memory cache, more than daemon.memory (${formatSize(this.budget)}) allows: the TOCs of the images it serves need it. Raise daemon.memory, or serve fewer images from this daemon`,
      );
    }
    return limit;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
