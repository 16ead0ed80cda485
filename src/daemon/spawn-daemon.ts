/**
 * Spawning a daemon that reports readiness (the mechanics of daemonize.ts, without the
 * configuration, so that cli/entry.ts can use it before anything else is loaded).
 *
 * The parent spawns a detached copy of the CLI (same Node, same loader flags) in `/` with a
 * socket on fd 3, waits for one JSON line on it — `{"ready":true}` or `{"error":"…"}` — and
 * returns; the child keeps running on its own.
 *
 * An early daemon (`tocfs mount` without --foreground) is spawned before the CLI has parsed its
 * command line: it loads its code while the parent parses arguments and settings, then reads
 * its options, one JSON line, from the same socket. Each Node start-up costs this VM ~60 ms and
 * the parent's parsing ~70 ms more; started early, the daemon's own start-up overlaps them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TocfsError } from '../errors.js';
import { runtimeDir } from './state.js';

export const READY_FD = 3;
/** Outside the TOCFS_* names, which the config loader takes for settings (and warns about unknown ones). */
export const READY_ENV = 'TOCFSD_READY_FD';

export interface ReadyMessage {
  ready?: boolean;
  error?: string;
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * This process's Node flags for the child, with `--import`/`--loader` module names resolved
 * here: the child starts in `/` (so it holds no directory busy) where a bare name like `tsx`
 * would not resolve.
 */
function childExecArgv(): string[] {
  const out: string[] = [];
  const resolveSpec = (spec: string): string => {
    if (spec.startsWith('.') || spec.startsWith('/') || /^[a-z]+:/.test(spec)) return spec.startsWith('.') ? pathToFileURL(resolve(spec)).href : spec;
    try {
      return import.meta.resolve(spec);
    } catch {
      return spec;
    }
  };
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^(--import|--loader|--experimental-loader)(?:=(.*))?$/.exec(a);
    if (!m) {
      out.push(a);
    } else if (m[2] !== undefined) {
      out.push(`${m[1]}=${resolveSpec(m[2])}`);
    } else if (i + 1 < argv.length) {
      out.push(a, resolveSpec(argv[++i]!));
    }
  }
  return out;
}

/** The CLI again, detached, in `/`, its stdout and stderr on `logFd`, a socket on fd 3. */
export function spawnDaemon(args: string[], logFd: number, env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, [...childExecArgv(), resolve(process.argv[1]!), ...args], {
    detached: true,
    cwd: '/',
    env: { ...env, [READY_ENV]: String(READY_FD) },
    stdio: ['ignore', logFd, logFd, 'pipe'],
  });
}

/** Resolves with the child's pid once it reports ready; rejects with its error, or with the end of `logFile` when it exits first. */
export function awaitReady(child: ChildProcess, logFile: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    let settled = false;
    const channel = child.stdio[READY_FD] as Socket;
    const settle = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      channel.destroy();
      if (err) return reject(err);
      child.unref();
      resolve(child.pid!);
    };
    channel.ref();
    channel.on('data', (d: Buffer) => {
      text += d.toString();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      let msg: ReadyMessage;
      try {
        msg = JSON.parse(text.slice(0, nl)) as ReadyMessage;
      } catch {
        msg = { error: `unreadable readiness message: ${text.slice(0, 200)}` };
      }
      if (msg.ready) settle(undefined);
      else settle(new TocfsError(msg.error ?? 'the mount daemon failed'));
    });
    channel.on('error', () => undefined);
    child.on('error', (e) => settle(new TocfsError(`cannot start the mount daemon: ${e.message}`)));
    const exited = (code: number | null, signal: NodeJS.Signals | null): void => {
      const why = signal ? `was killed by ${signal}` : `exited with status ${code}`;
      const logTail = tail(logFile);
      settle(new TocfsError(`the mount daemon ${why} before it was ready${logTail ? `; its log (${logFile}) ends with:\n${logTail}` : ''}`));
    };
    child.on('exit', exited);
    // An early daemon may have ended before the parent got to wait for it.
    if (child.exitCode !== null || child.signalCode !== null) exited(child.exitCode, child.signalCode);
  });
}

/** A daemon spawned before the command line was parsed, waiting for its options. */
export class EarlyDaemon {
  private handed = false;

  private constructor(
    private readonly child: ChildProcess,
    /** Its log until the parent knows the real name (runtime dir, hidden, by the parent's pid). */
    private readonly startingLog: string,
  ) {
    // Nothing here keeps the parent alive: a parent that never hands it options (bad usage,
    // an error before the mount) exits, its end of the socket closes, and the daemon ends.
    child.unref();
    (child.stdio[READY_FD] as Socket).unref();
    child.on('error', () => undefined);
    process.once('exit', () => {
      if (!this.handed) rmSync(this.startingLog, { force: true });
    });
  }

  /**
   * Spawns `tocfs ARGS --foreground` with `env`, or returns undefined when the runtime
   * directory cannot be made (the usual start then says why).
   */
  static start(args: readonly string[], env: NodeJS.ProcessEnv): EarlyDaemon | undefined {
    const startingLog = join(runtimeDir(), 'mounts', `.starting-${process.pid}.log`);
    let log: number;
    try {
      mkdirSync(dirname(startingLog), { recursive: true, mode: 0o700 });
      log = openSync(startingLog, 'w', 0o600);
    } catch {
      return undefined;
    }
    try {
      return new EarlyDaemon(spawnDaemon([...args, '--foreground'], log, env), startingLog);
    } finally {
      closeSync(log);
    }
  }

  /** Gives the daemon its options (one JSON line) and its log its real name; resolves with its pid once it is ready. */
  hand(options: unknown, logFile: string): Promise<number> {
    this.handed = true;
    renameSync(this.startingLog, logFile);
    (this.child.stdio[READY_FD] as Socket).write(JSON.stringify(options) + '\n');
    return awaitReady(this.child, logFile);
  }
}

let early: EarlyDaemon | undefined;

/** cli/entry.ts: spawn the daemon of this `tocfs mount` now. */
export function startEarlyDaemon(args: readonly string[], env: NodeJS.ProcessEnv): void {
  early = EarlyDaemon.start(args, env);
}

/** The early daemon, once (the mount command hands it its options, or leaves it to end). */
export function takeEarlyDaemon(): EarlyDaemon | undefined {
  const d = early;
  early = undefined;
  return d;
}
