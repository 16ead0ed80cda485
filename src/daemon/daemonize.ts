/**
 * Starting a daemon that reports readiness (spawn-daemon.ts has the mechanics), and the
 * daemon's side of it: one JSON line on fd 3, `{"ready":true}` or `{"error":"…"}`.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { absolutePathEnv, currentConfig } from '../config/index.js';
import { awaitReady, READY_ENV, READY_FD, spawnDaemon, type ReadyMessage } from './spawn-daemon.js';

export interface DaemonOptions {
  /** CLI arguments of the child (without node and the entry script). */
  args: string[];
  /** The child's stdout and stderr go here (the file is started afresh unless appendLog). */
  logFile: string;
  appendLog?: boolean;
  /** Variables added to the child's environment. */
  env?: Record<string, string>;
}

/** Spawns the daemon and resolves with its pid once it reports ready; rejects with its error otherwise. */
export function startDaemon(opts: DaemonOptions): Promise<number> {
  // One mount's log, kept after it ends for a post-mortem; a successor (--takeover) appends to its predecessor's.
  const log = openSync(opts.logFile, opts.appendLog ? 'a' : 'w', 0o600);
  // Relative paths in TOCFS_* variables were resolved here; the child, in /, gets them absolute.
  const child = spawnDaemon(opts.args, log, { ...process.env, ...absolutePathEnv(currentConfig()), ...opts.env });
  closeSync(log);
  return awaitReady(child, opts.logFile);
}

/** In the daemon: whether a parent waits for a readiness message. */
export function hasReadyChannel(): boolean {
  return process.env[READY_ENV] === String(READY_FD);
}

function send(msg: ReadyMessage): void {
  if (!hasReadyChannel()) return;
  delete process.env[READY_ENV];
  try {
    writeSync(READY_FD, JSON.stringify(msg) + '\n');
    closeSync(READY_FD);
  } catch {
    // The parent is gone: nobody to tell.
  }
}

export function notifyReady(): void {
  send({ ready: true });
}

export function notifyFailure(message: string): void {
  send({ error: message });
}
