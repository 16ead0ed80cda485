/**
 * Whether each registry host answers, shared by every image source of the process.
 *
 * A request that stalls (no bytes for the stall timeout) or cannot connect makes the host
 * suspect; one quick check (`GET /v2/`, any HTTP answer will do) decides: no answer, and the
 * host is down. While it is down, requests for it fail at once with RegistryDownError (so a
 * read of data not in the cache fails at once, or goes to a mirror, and the kernel's retries
 * of a failed read cost nothing), and one background check with backoff per host notices
 * when it answers again. Each change of state is one log line.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { SourceError } from '../errors.js';
import { logger } from '../log.js';
import { metrics } from '../metrics/index.js';

/** Waits between background checks of a host that is down: soon at first, then every 2 s. */
export const PROBE_DELAYS_MS = [250, 500, 1000, 2000];
/** The longest one background check waits for an answer (a frozen registry answers it the moment it resumes). */
const PROBE_TIMEOUT_MS = 10_000;
/** The longest the check after a stall waits for an answer before the host counts as down. */
const CONFIRM_MAX_MS = 5000;

/** Asks the host whether it answers at all; rejects when it does not. */
export type Probe = (signal: AbortSignal) => Promise<void>;

/** A request not sent because its registry is down. */
export class RegistryDownError extends SourceError {
  constructor(
    readonly registry: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, undefined, options);
    this.name = 'RegistryDownError';
  }
}

/** The RegistryDownError along an error's cause chain, if any. */
export function registryDownCause(e: unknown): RegistryDownError | undefined {
  for (let x = e, depth = 0; x instanceof Error && depth < 8; x = x.cause, depth++) if (x instanceof RegistryDownError) return x;
  return undefined;
}

export interface RegistryHealthStatus {
  registry: string;
  state: 'healthy' | 'down';
  /** When it entered this state (ISO 8601): for a healthy host, its first use or when it came back. */
  since: string;
  /** What made it go down last. */
  lastError?: string;
  lastErrorAt?: string;
  /** Times it went down. */
  outages: number;
  /** Requests failed at once during the current (or last) outage. */
  failedFast: number;
}

const clock = (t: number): string => `${new Date(t).toISOString().slice(11, 19)} UTC`;

export class RegistryHealth {
  private state: 'healthy' | 'down' = 'healthy';
  private since = Date.now();
  private lastError: string | undefined;
  private lastErrorAt: number | undefined;
  private outages = 0;
  private failedFast = 0;
  private confirming: Promise<boolean> | undefined;
  /** Probes of the live sources that use this host; the newest one is asked. */
  private readonly probes: Probe[] = [];
  private watching = false;
  /** When the host was last asked whether it answers (Date.now()). */
  private lastCheck = 0;
  private watchAbort: AbortController | undefined;
  private readonly downListeners = new Set<(e: RegistryDownError) => void>();

  constructor(readonly registry: string) {
    metrics.registryUp(registry, true);
  }

  get down(): boolean {
    return this.state === 'down';
  }

  /** Lets `probe` check the host while it is down; returns the function that withdraws it (when its source closes). */
  register(probe: Probe): () => void {
    this.probes.push(probe);
    if (this.down) {
      // With no other source alive, nobody has been checking: a source that lives only for one
      // lookup (the store's, while the registry is down) would close before the background
      // check asks with it. So its first request waits for one check, unless one was made lately.
      if (this.probes.length === 1 && !this.confirming && Date.now() - this.lastCheck > PROBE_DELAYS_MS.at(-1)!) this.recheck(probe);
      void this.watch();
    }
    return () => {
      const i = this.probes.indexOf(probe);
      if (i >= 0) this.probes.splice(i, 1);
      if (this.probes.length === 0) this.watchAbort?.abort();
    };
  }

  /** Calls `listener` when the host is found down; returns the function that stops it. */
  onDown(listener: (e: RegistryDownError) => void): () => void {
    this.downListeners.add(listener);
    return () => this.downListeners.delete(listener);
  }

  /** Before a request: throws RegistryDownError at once when the host is down (after a check under way, if one is). */
  async ready(): Promise<void> {
    if (this.confirming) await this.confirming;
    if (this.down) throw this.failFast();
  }

  /** The error of a request refused because the host is down, counted as such. */
  failFast(): RegistryDownError {
    this.failedFast++;
    metrics.registryFailedFast(this.registry);
    return this.downError();
  }

  downError(cause?: unknown): RegistryDownError {
    return new RegistryDownError(
      this.registry,
      `registry ${this.registry} is not answering (since ${clock(this.since)}: ${this.lastError ?? 'no answer'}): reads of data not in the cache fail until it answers again, which tocfs checks every ${PROBE_DELAYS_MS.at(-1)! / 1000} s; check the registry and the network to it, or add a mirror for it in registries.conf`,
      cause !== undefined ? { cause } : undefined,
    );
  }

  /**
   * A request to the host stalled or could not connect (`err`): asks the host once whether it
   * answers at all, within `stallMs` (at most 5 s), and every request failing meanwhile waits
   * for the same answer. Resolves true when there was none: the host is down from now on.
   */
  confirmDown(err: Error, stallMs: number): Promise<boolean> {
    if (this.down) return Promise.resolve(true);
    if (!this.confirming) {
      const probe = this.probes.at(-1);
      const asked = probe ? probe(AbortSignal.timeout(Math.min(CONFIRM_MAX_MS, stallMs))) : Promise.reject(err);
      this.confirming = asked
        .then(
          () => false,
          () => {
            this.markDown(err);
            return true;
          },
        )
        .finally(() => (this.confirming = undefined));
    }
    return this.confirming;
  }

  /** Asks the down host now, with `probe`; requests wait for the answer. */
  private recheck(probe: Probe): void {
    this.lastCheck = Date.now();
    this.confirming = probe(AbortSignal.timeout(CONFIRM_MAX_MS))
      .then(
        () => {
          this.markUp();
          return false;
        },
        () => true,
      )
      .finally(() => (this.confirming = undefined));
  }

  status(): RegistryHealthStatus {
    return {
      registry: this.registry,
      state: this.state,
      since: new Date(this.since).toISOString(),
      ...(this.lastError !== undefined ? { lastError: this.lastError, lastErrorAt: new Date(this.lastErrorAt!).toISOString() } : {}),
      outages: this.outages,
      failedFast: this.failedFast,
    };
  }

  private markDown(err: Error): void {
    if (this.down) return;
    this.state = 'down';
    this.since = this.lastErrorAt = Date.now();
    this.lastError = err.message;
    this.outages++;
    this.failedFast = 0;
    metrics.registryUp(this.registry, false);
    logger().warn({ registry: this.registry, err: err.message }, 'registry not answering: reads of data not in the cache fail at once until it answers again (checked in the background)');
    const down = this.downError(err);
    for (const l of [...this.downListeners]) l(down);
    void this.watch();
  }

  private markUp(): void {
    if (!this.down) return;
    const downMs = Date.now() - this.since;
    this.state = 'healthy';
    this.since = Date.now();
    metrics.registryUp(this.registry, true);
    logger().info({ registry: this.registry, downMs, failedFast: this.failedFast }, 'registry answers again: reads fetch from it again');
  }

  /** The one background check of a host that is down, until it answers or no source is left to ask with. */
  private async watch(): Promise<void> {
    if (this.watching) return;
    this.watching = true;
    try {
      for (let i = 0; this.down; i++) {
        await sleep(PROBE_DELAYS_MS[Math.min(i, PROBE_DELAYS_MS.length - 1)], undefined, { ref: false });
        // Nobody left to ask with: the next source to register starts again.
        const probe = this.probes.at(-1);
        if (!probe) return;
        const ac = new AbortController();
        this.watchAbort = ac;
        const timer = setTimeout(() => ac.abort(), PROBE_TIMEOUT_MS).unref();
        this.lastCheck = Date.now();
        try {
          await probe(ac.signal);
          this.markUp();
        } catch {
          // Still down.
        } finally {
          clearTimeout(timer);
          this.watchAbort = undefined;
        }
      }
    } finally {
      this.watching = false;
    }
  }
}

const hosts = new Map<string, RegistryHealth>();

/** The health of registry host `registry` (as registries.conf names it, with its port). */
export function registryHealth(registry: string): RegistryHealth {
  let h = hosts.get(registry);
  if (!h) hosts.set(registry, (h = new RegistryHealth(registry)));
  return h;
}

/** Every registry host this process has used, for `tocfs store status`. */
export function registryStates(): RegistryHealthStatus[] {
  return [...hosts.values()].map((h) => h.status());
}
