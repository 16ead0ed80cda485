/** Settings of the registry client. Every field has a default; tests shorten the delays. */
import type { Platform } from '../source/types.js';

export interface RetryPolicy {
  /** Attempts per request, the first included. */
  attempts: number;
  /** Backoff before retry n is a random delay in [0, min(maxDelayMs, baseDelayMs * 2^n)] (full jitter). */
  baseDelayMs: number;
  maxDelayMs: number;
  /** A `Retry-After` longer than this is cut to it. */
  maxRetryAfterMs: number;
}

export interface Timeouts {
  /** Time to open a connection (TCP and TLS). */
  connectMs: number;
  /**
   * A request is given up when no bytes arrive for this long: waiting for the response once it
   * is sent, or between two parts of its body. Never a limit on a transfer that keeps moving.
   */
  stallMs: number;
}

export interface RegistryClientOptions {
  /** registries.conf to read instead of $CONTAINERS_REGISTRIES_CONF / ~/.config/containers/registries.conf / /etc/containers/registries.conf. */
  registriesConf?: string;
  /** Drop-in directory instead of /etc/containers/registries.conf.d (+ ~/.config/containers/registries.conf.d). */
  registriesConfDir?: string;
  /** The only auth file to read (like `podman --authfile`); default $REGISTRY_AUTH_FILE, else the standard list. */
  authFile?: string;
  /** Per-registry TLS trust (`HOST[:PORT]/*.crt`, `*.cert`, `*.key`); default $TOCFS_CERTS_DIR or /etc/containers/certs.d. */
  certsDir?: string;
  /** Connections per registry host. */
  connections?: number;
  retry?: Partial<RetryPolicy>;
  timeouts?: Partial<Timeouts>;
  /** Where HTTP_PROXY, HTTPS_PROXY and NO_PROXY are read (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 10_000, maxRetryAfterMs: 60_000 };
export const DEFAULT_TIMEOUTS: Timeouts = { connectMs: 10_000, stallMs: 10_000 };
export const DEFAULT_CONNECTIONS = 16;
export const DEFAULT_CERTS_DIR = '/etc/containers/certs.d';

/** How to open an image from a registry (or an OCI layout, which uses only `platform`). */
export interface SourceOptions {
  /** false: allow plain HTTP and unverified TLS for registries (Podman's --tls-verify=false). */
  tlsVerify?: boolean;
  platform?: Platform;
  /** Registry client settings (config file locations, retries, timeouts); defaults suit normal use. */
  registry?: RegistryClientOptions;
}
