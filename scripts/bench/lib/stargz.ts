/**
 * The peer: stargz-store (containerd/stargz-snapshotter's additional layer store for Podman),
 * run from a prebuilt binary the benchmark is given (`--stargz-store PATH` or
 * $TOCFS_BENCH_STARGZ_STORE). The benchmark neither builds nor ships it: without a binary its
 * modes are reported as unavailable, with the reason.
 */
import { access, constants, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClientSide } from './link.js';
import { run, startService, waitFor } from './proc.js';

/** Why stargz-store cannot be measured with `bin` (undefined when it can). */
export async function stargzStoreMissing(bin: string | undefined): Promise<string | undefined> {
  if (!bin) return 'no stargz-store binary given (--stargz-store PATH or TOCFS_BENCH_STARGZ_STORE)';
  return access(bin, constants.X_OK).then(
    () => undefined,
    () => `stargz-store binary ${bin} is missing or not executable`,
  );
}

/** What identifies the binary: $TOCFS_BENCH_STARGZ_STORE_VERSION (e.g. "v0.14.3") and its sha256 (it has no --version). */
export async function stargzStoreVersion(bin: string): Promise<string> {
  const r = await run(['sha256sum', bin], { check: false });
  const label = process.env.TOCFS_BENCH_STARGZ_STORE_VERSION;
  return `${label ? `${label}, ` : ''}sha256 ${r.stdout.split(' ')[0]!.slice(0, 16)}…`;
}

/**
 * A running stargz-store serving `storeDir` (Podman: `additionallayerstores = ["storeDir:ref"]`),
 * reaching the benchmark's plain-HTTP registry; `backgroundFetch` false sets
 * `no_background_fetch = true` (only what is read, and the prefetch landmark, is fetched).
 */
export async function startStargzStore(
  bin: string,
  side: ClientSide,
  dir: string,
  storeDir: string,
  backgroundFetch: boolean,
): Promise<{ pid: number; output: string[]; stop(): Promise<void> }> {
  await mkdir(storeDir, { recursive: true });
  const cfg = join(dir, 'stargz-store.toml');
  await writeFile(
    cfg,
    `no_background_fetch = ${backgroundFetch ? 'false' : 'true'}
[[resolver.host."${side.host}".mirrors]]
host = "${side.host}"
insecure = true
`,
  );
  const svc = startService([bin, '--log-level', 'info', '--config', cfg, '--root', join(dir, 'stargz-root'), storeDir], { ns: side.ns });
  const exited = (): boolean => svc.child.exitCode !== null;
  const stop = async (): Promise<void> => {
    if (svc.child.exitCode === null) svc.child.kill('SIGINT');
    const t = setTimeout(() => svc.child.kill('SIGKILL'), 5000);
    await new Promise<void>((r) => (svc.child.exitCode !== null || svc.child.signalCode !== null ? r() : svc.child.once('exit', () => r())));
    clearTimeout(t);
    await run(['fusermount', '-uz', storeDir], { check: false });
    await run(['umount', '-l', storeDir], { check: false });
  };
  try {
    await waitFor('stargz-store mount', async () => exited() || (await run(['mountpoint', '-q', storeDir], { check: false })).code === 0, 30_000);
    if (exited()) throw new Error(`stargz-store exited: ${svc.output.slice(-5).join(' | ')}`);
  } catch (e) {
    await stop();
    throw e;
  }
  return { pid: svc.child.pid!, output: svc.output, stop };
}
