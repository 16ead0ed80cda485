import { setTimeout as sleep } from 'node:timers/promises';
import { SourceError } from '../errors.js';
import { logger } from '../log.js';
import type { RetryPolicy } from './options.js';

/** A failure worth another attempt: network errors, timeouts, 5xx, 429, a lying response. */
export class TransientError extends SourceError {
  constructor(
    message: string,
    status?: number,
    /** What the server asked for in `Retry-After`. */
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, status, options);
    this.name = 'TransientError';
  }
}

/** `Retry-After`: delay-seconds or an HTTP date. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export function backoffMs(policy: RetryPolicy, retry: number, retryAfterMs?: number): number {
  const jittered = Math.random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
  if (retryAfterMs === undefined) return jittered;
  return Math.max(jittered, Math.min(retryAfterMs, policy.maxRetryAfterMs));
}

/**
 * Runs `attempt` until it succeeds, fails with a non-transient error, or the policy's
 * attempts are spent. `attempt` gets the attempt number (0-based).
 */
export async function withRetries<T>(policy: RetryPolicy, what: string, signal: AbortSignal | undefined, attempt: (n: number) => Promise<T>): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (e) {
      if (!(e instanceof TransientError) || signal?.aborted) throw e;
      if (n + 1 >= policy.attempts) {
        throw new SourceError(`${e.message} (gave up after ${policy.attempts} attempts)`, e.status, { cause: e });
      }
      const delay = backoffMs(policy, n, e.retryAfterMs);
      logger().warn({ what, attempt: n + 1, delayMs: Math.round(delay), err: e.message }, 'registry request failed; retrying');
      await sleep(delay, undefined, signal ? { signal } : undefined);
    }
  }
}
