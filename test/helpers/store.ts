/** Runs `tocfs store --foreground` from source for tests, and waits until the store answers. */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { TocEntry } from '../../src/formats/toc.js';
import type { LayerContent } from '../../src/store/layers.js';

const ENTRY = fileURLToPath(new URL('../../src/cli/entry.ts', import.meta.url));

export interface RunningStore {
  dir: string;
  child: ChildProcess;
  /** stderr lines (JSON logs). */
  log: string[];
  /** Resolves with the exit code once the process is gone. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function isFuseMounted(dir: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  return mounts.split('\n').some((l) => l.split(' ')[1] === dir && l.split(' ')[2] === 'fuse.tocfs');
}

/** The arguments of `tocfs store --foreground` from source, as tests run it. */
export function storeArgs(dir: string, cacheDir: string, extraArgs: string[] = []): string[] {
  return ['--import', 'tsx', ENTRY, 'store', '--foreground', '--tls-verify=false', '--cache-dir', cacheDir, '--metrics-address', '', '--log-level', 'debug', ...extraArgs, dir];
}

/** `env` is added to this process's environment for the store. */
export async function startStore(dir: string, cacheDir: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<RunningStore> {
  const child = spawn(process.execPath, storeArgs(dir, cacheDir, extraArgs), { env: { ...process.env, TOCFS_LOG_JSON: '1', TOCFS_CONFIG: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  return superviseStore(child, dir, 'tocfs store');
}

/** Collects a spawned store's log, waits until it says it is mounted, and gives the handle tests stop it by. */
export async function superviseStore(child: ChildProcess, dir: string, what: string): Promise<RunningStore> {
  const log: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on('line', (line) => log.push(line));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 30_000;
  while (!log.some((l) => l.includes('layer store mounted'))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start:\n${log.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    dir,
    child,
    log,
    exited,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/**
 * Waits until the registry's access log holds every request answered so far: it logs each
 * request when it completes, after the response, so a marker request is sent and awaited.
 */
export async function registryLogSettled(registry: { host: string; log: string[] }): Promise<void> {
  const marker = `tocfs-barrier-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const res = await fetch(`http://${registry.host}/v2/?${marker}`);
  await res.arrayBuffer();
  const deadline = Date.now() + 10_000;
  while (!registry.log.some((l) => l.includes(marker))) {
    if (Date.now() > deadline) throw new Error('the registry did not log the marker request');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Bytes [offset, offset+length) of a file of a store layer, as FUSE reads them (LayerContent.readInto). */
export async function readContent(content: Pick<LayerContent, 'readInto'>, entry: TocEntry, offset: number, length: number): Promise<Buffer> {
  const into = Buffer.alloc(length);
  return into.subarray(0, await content.readInto(entry, offset, length, into));
}
