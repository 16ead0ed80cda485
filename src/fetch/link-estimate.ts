/**
 * How big a coalesced range request should be on this link. A request costs a round trip
 * plus the registry's own work before the first byte (measured on a loopback
 * docker-registry: 6-15 ms, as long as sending 4 MiB); the bytes after it come at the
 * link's rate. Requests several times the bandwidth-delay product spend most of their time
 * moving bytes; smaller ones mostly wait. Both are estimated from the requests themselves.
 */

/** Requests start at this size, and never go below it. */
export const MIN_REQUEST_BYTES = 1024 * 1024;
/** Requests this many times the bandwidth-delay product keep the wait under a fifth of their time. */
const BDP_MULTIPLE = 4;
/** Weight of the newest sample in the moving averages. */
const ALPHA = 0.25;
/** Bodies shorter than this say little about the rate (their time is mostly the event loop's). */
const MIN_SAMPLE_BYTES = 256 * 1024;

export class LinkEstimate {
  /** Time to first byte, ms (moving average). */
  private waitMs: number | undefined;
  /** Body bytes per ms (moving average). */
  private rate: number | undefined;

  /** One finished request: `bytes` long, its first byte `waitMs` after it was sent, its last `bodyMs` after that. */
  sample(bytes: number, waitMs: number, bodyMs: number): void {
    this.waitMs = this.waitMs === undefined ? waitMs : this.waitMs + ALPHA * (waitMs - this.waitMs);
    if (bytes < MIN_SAMPLE_BYTES) return;
    const rate = bytes / Math.max(bodyMs, 0.5);
    this.rate = this.rate === undefined ? rate : this.rate + ALPHA * (rate - this.rate);
  }

  /** The request size to coalesce up to: a power of two between MIN_REQUEST_BYTES and `max`. */
  requestBytes(max: number): number {
    if (max <= MIN_REQUEST_BYTES) return max;
    if (this.waitMs === undefined || this.rate === undefined) return MIN_REQUEST_BYTES;
    const want = BDP_MULTIPLE * this.rate * this.waitMs;
    let size = MIN_REQUEST_BYTES;
    while (size < want && size * 2 <= max) size *= 2;
    return size;
  }

  /** The current estimates, for logs and metrics. */
  get current(): { waitMs: number | undefined; bytesPerSec: number | undefined } {
    return { waitMs: this.waitMs, bytesPerSec: this.rate === undefined ? undefined : this.rate * 1000 };
  }
}
