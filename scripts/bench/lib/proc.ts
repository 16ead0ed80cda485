/** Running commands (optionally inside one of the benchmark's network namespaces) and timing them. */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export const REG_NS = 'tocfsbench-reg';
export const CLI_NS = 'tocfsbench-cli';

/** argv prefix that runs a command in network namespace `ns` while keeping the host's mount
 * namespace (unlike `ip netns exec`), so FUSE mounts made there are visible everywhere. */
export function inNs(ns: string | undefined, argv: string[]): string[] {
  return ns ? ['nsenter', `--net=/run/netns/${ns}`, '--', ...argv] : argv;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  ns?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  input?: string;
  /** Throw on a non-zero exit (default true). */
  check?: boolean;
  /** What to call the command in an error (default: its first words). */
  label?: string;
}

export async function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = inNs(opts.ns, argv);
  const t0 = performance.now();
  const child = spawn(full[0]!, full.slice(1), {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  if (opts.input !== undefined) {
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input);
  }
  // A hung step (a stuck FUSE read, a stalled pull) must not eat the whole run's time budget.
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 240_000);
  const code = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
  });
  clearTimeout(timer);
  const ms = performance.now() - t0;
  if (code !== 0 && opts.check !== false) {
    const label = opts.label ?? argv.slice(0, 4).join(' ');
    throw new Error(`${label} exited ${code}: ${(stderr || stdout).trim().split('\n').slice(-6).join('\n')}`);
  }
  return { code, stdout, stderr, ms };
}

/** A long-running child (registry, proxy, daemon) with its output kept for the logs. */
export interface Service {
  child: ChildProcess;
  output: string[];
  stop(): Promise<void>;
}

export function startService(argv: string[], opts: { ns?: string; env?: NodeJS.ProcessEnv } & SpawnOptions = {}): Service {
  const full = inNs(opts.ns, argv);
  const child = spawn(full[0]!, full.slice(1), { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  let buf = '';
  const onData = (d: Buffer): void => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      output.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    child,
    output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export async function dropCaches(): Promise<void> {
  await run(['sync']);
  await run(['sh', '-c', 'echo 3 > /proc/sys/vm/drop_caches']);
}

/** Lazily unmounts every mount at or below `dir` (leftovers of an interrupted run). */
export async function unmountUnder(dir: string): Promise<void> {
  await run(['sh', '-c', `awk '{print $5}' /proc/self/mountinfo | grep '^${dir}' | sort -ru | xargs -r -n1 umount -l`], { check: false });
}
