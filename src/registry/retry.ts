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

/** The failures one request may have before it is given up, and the waits between them. */
export class RetryBudget {
  private failures = 0;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly what: string,
  ) {}

  /**
   * After a failed attempt: rethrows `e` unless it is transient and attempts are left
   * (then waits the backoff, or what Retry-After asked for).
   */
  async failed(e: unknown, signal?: AbortSignal, context: Record<string, unknown> = {}): Promise<void> {
    if (!(e instanceof TransientError) || signal?.aborted) throw e;
    if (++this.failures >= this.policy.attempts) throw new SourceError(`${e.message} (gave up after ${this.failures} attempts)`, e.status, { cause: e });
    const delay = backoffMs(this.policy, this.failures - 1, e.retryAfterMs);
    logger().warn({ what: this.what, ...context, attempt: this.failures, delayMs: Math.round(delay), err: e.message }, 'registry request failed; retrying');
    await sleep(delay, undefined, signal ? { signal } : undefined);
  }

  /** Progress was made: earlier failures no longer count. */
  reset(): void {
    this.failures = 0;
  }
}

/** Runs `attempt` until it succeeds or the retry budget says stop. */
export async function withRetries<T>(policy: RetryPolicy, what: string, signal: AbortSignal | undefined, attempt: () => Promise<T>): Promise<T> {
  const budget = new RetryBudget(policy, what);
  for (;;) {
    try {
      return await attempt();
    } catch (e) {
      await budget.failed(e, signal);
    }
  }
}
