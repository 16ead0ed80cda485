/**
 * Starting a daemon that reports readiness: the parent spawns a detached copy of the CLI
 * (same Node, same loader flags) with a pipe on fd 3, waits for one JSON line on it —
 * `{"ready":true}` or `{"error":"…"}` — and returns; the child keeps running on its own.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { absolutePathEnv, currentConfig } from '../config/index.js';
import { TocfsError } from '../errors.js';

const READY_FD = 3;
/** Outside the TOCFS_* names, which the config loader takes for settings (and warns about unknown ones). */
const READY_ENV = 'TOCFSD_READY_FD';

interface ReadyMessage {
  ready?: boolean;
  error?: string;
}

export interface DaemonOptions {
  /** CLI arguments of the child (without node and the entry script). */
  args: string[];
  /** The child's stdout and stderr go here (the file is started afresh unless appendLog). */
  logFile: string;
  appendLog?: boolean;
  /** Variables added to the child's environment. */
  env?: Record<string, string>;
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

/** Spawns the daemon and resolves with its pid once it reports ready; rejects with its error otherwise. */
export function startDaemon(opts: DaemonOptions): Promise<number> {
  // One mount's log, kept after it ends for a post-mortem; a successor (--takeover) appends to its predecessor's.
  const log = openSync(opts.logFile, opts.appendLog ? 'a' : 'w', 0o600);
  const child = spawn(process.execPath, [...childExecArgv(), resolve(process.argv[1]!), ...opts.args], {
    detached: true,
    cwd: '/',
    // Relative paths in TOCFS_* variables were resolved here; the child, in /, gets them absolute.
    env: { ...process.env, ...absolutePathEnv(currentConfig()), ...opts.env, [READY_ENV]: String(READY_FD) },
    stdio: ['ignore', log, log, 'pipe'],
  });
  closeSync(log);
  return new Promise((resolve, reject) => {
    let text = '';
    let settled = false;
    const settle = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      child.stdio[READY_FD]?.destroy();
      if (err) return reject(err);
      child.unref();
      resolve(child.pid!);
    };
    const channel = child.stdio[READY_FD]!;
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
    child.on('exit', (code, signal) => {
      const why = signal ? `was killed by ${signal}` : `exited with status ${code}`;
      const logTail = tail(opts.logFile);
      settle(new TocfsError(`the mount daemon ${why} before it was ready${logTail ? `; its log (${opts.logFile}) ends with:\n${logTail}` : ''}`));
    });
  });
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
