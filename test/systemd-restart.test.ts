/**
 * `systemctl restart` of the shipped units under a real systemd (PID 1 of a container booted
 * from this machine's root, test/helpers/systemd-container.ts), with the units as
 * scripts/install.sh installs them: systemd's file descriptor store keeps the FUSE connection
 * across the restart, so a reader in the container sees no error while tocfs restarts under
 * it, for `tocfs-mount@` and for the layer store, and a Podman container (Podman 4.3.1 and
 * crun, inside the same systemd container) reading from the store in a loop sees none either,
 * nor does a reader of a user's store run by that user's systemd (systemctl --user).
 * A stop still unmounts and leaves nothing in the store; a daemon killed with SIGKILL is restarted by systemd and serves again, also when
 * nothing detached its mount and the fd store still holds a connection nobody answers.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadFuseDev } from '../src/fs/session/native.js';
import { encodeRef } from '../src/store/names.js';
import { buildImage, seededBytes, type FileSpec } from './helpers/images.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { have, LOADER } from './helpers/podman.js';
import { loopReader, type ReaderSummary } from './helpers/loop-reader.js';
import { openFuseToAll } from './helpers/rootless.js';
import { run, SystemdContainer, systemdContainerSkipReason, type RunResult, type ServiceManager } from './helpers/systemd-container.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const dev = loadFuseDev();
const skip = systemdContainerSkipReason() || ('unavailable' in dev ? `own FUSE session unavailable: ${dev.unavailable}` : false);
const podmanSkip = ['podman', 'crun', 'python3'].filter((cmd) => !have(cmd)).map((cmd) => `no ${cmd} (scripts/setup.sh installs it)`)[0] ?? (LOADER ? false : 'no /lib64/ld-linux-x86-64.so.2 for the probe');
const FILES = 120;
const MOUNTPOINT = '/run/tocfs-test/mnt';
const MOUNT_UNIT = 'tocfs-mount@fdtest.service';
const STORE_UNIT = 'tocfs-store.service';
const STORE_DIR = '/var/lib/tocfs/store';

const READER = loopReader(FILES);

/** The probe a Podman container runs (the host's python3, through /host): reads and checks every file until /out/stop appears, then writes /out/probe.json. */
const PODMAN_PROBE = `
import hashlib, json, os, time
want = json.load(open('/out/want.json'))
rounds = reads = 0; errors = []; longest = 0.0
while not os.path.exists('/out/stop'):
    for name, digest in want.items():
        t0 = time.monotonic()
        try:
            with open('/' + name, 'rb') as f:
                if hashlib.sha256(f.read()).hexdigest() != digest: errors.append(name + ': wrong bytes')
            os.stat('/' + name); reads += 1
        except OSError as e:
            errors.append(name + ': ' + (os.strerror(e.errno) if e.errno else str(e)))
        longest = max(longest, time.monotonic() - t0)
    try:
        if len(os.listdir('/data')) != ${FILES}: errors.append('listing: wrong count')
    except OSError as e:
        errors.append('listing: ' + str(e))
    rounds += 1
    if rounds == 1: open('/out/started', 'w').close()
json.dump({'rounds': rounds, 'reads': reads, 'maxStallMs': round(longest * 1000), 'errors': errors[:20], 'errorCount': len(errors)}, open('/out/probe.json', 'w'))
`;

/** The mount id of `mnt` inside the container (changes when it is mounted afresh), or undefined. */
async function mountId(c: SystemdContainer, mnt: string): Promise<string | undefined> {
  const info = (await c.exec(['cat', '/proc/self/mountinfo'])).stdout;
  return info.split('\n').find((l) => l.split(' ')[4] === mnt)?.split(' ')[0];
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Restarts `unit` twice under a reader of `dir`; the reader sees no error, the mount stays the same one, each start serves the kept session. */
async function restartUnderReader(m: ServiceManager, c: SystemdContainer, unit: string, mnt: string, dir: string, want: Record<string, string>): Promise<ReaderSummary> {
  const count = async (re: RegExp): Promise<number> => (await m.journal(unit)).match(re)?.length ?? 0;
  const LEFT = /leaving the mount to the next start/g;
  const RESUMED = /serving on the FUSE session systemd kept across the restart/g;
  const [leftBefore, resumedBefore] = [await count(LEFT), await count(RESUMED)];
  const id = await mountId(c, mnt);
  assert.ok(id, `${mnt} is mounted`);
  assert.equal(await m.property(unit, 'NFileDescriptorStore'), '1', 'the FUSE descriptor is in the fd store');
  const reader = m.spawn(['node', '-e', READER, dir, JSON.stringify(want)]);
  let output = '';
  let errors = '';
  reader.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  reader.stderr!.on('data', (d: Buffer) => (errors += d.toString()));
  const done = new Promise<void>((res) => reader.once('exit', () => res()));
  await new Promise((r) => setTimeout(r, 1000));
  for (let round = 1; round <= 2; round++) {
    const before = await m.property(unit, 'MainPID');
    await m.systemctl('restart', unit);
    const now = await m.property(unit, 'MainPID');
    assert.notEqual(now, before, `round ${round}: a new process serves`);
    assert.equal(await m.property(unit, 'ActiveState'), 'active');
    assert.equal(await mountId(c, mnt), id, `round ${round}: the same mount, never unmounted`);
    assert.equal(await m.property(unit, 'NFileDescriptorStore'), '1', `round ${round}: one FUSE descriptor kept, the session state taken`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  reader.stdin!.end();
  await done;
  const summary = JSON.parse(output.trim() || '{}') as ReaderSummary;
  assert.ok(summary.rounds > 2, `the reader kept reading (${output} ${errors})`);
  assert.deepEqual(summary.errors, [], `the reader saw ${summary.errorCount} errors across the restarts`);
  assert.equal((await count(LEFT)) - leftBefore, 2, 'each SIGTERM of a restart left the mount');
  assert.equal((await count(RESUMED)) - resumedBefore, 2, 'each next start resumed the kept session');
  return summary;
}

describe('systemctl restart under a real systemd: the fd store keeps the FUSE session', { skip, timeout: 600_000 }, () => {
  let work: string;
  let c: SystemdContainer;
  let registry: TestRegistry;
  let layerDigest: string;
  let storeRef: string;
  let podmanDir: string;
  let bin: string;
  let podmanEnv: Record<string, string>;
  const want: Record<string, string> = {};

  before(async () => {
    // On disk, not /tmp: the container's root is an overlay whose upper layer lives here, and nspawn gives the container its own /tmp.
    await mkdir('/var/tmp', { recursive: true });
    work = await mkdtemp('/var/tmp/tocfs-systemd-restart-');
    // A user in the container runs the launcher below.
    await chmod(work, 0o755);
    const files: FileSpec[] = [{ path: 'data', type: 'dir' }];
    for (let i = 0; i < FILES; i++) {
      const content = seededBytes(`sd${i}`, 1000 + i * 1531);
      files.push({ path: `data/f${i}`, content });
      want[`data/f${i}`] = createHash('sha256').update(content).digest('hex');
    }
    const img = await buildImage(join(work, 'img'), { format: 'zstd:chunked', layers: [files] });
    layerDigest = img.layers[0]!.digest;
    registry = await startRegistry();
    storeRef = `${registry.host}/${await registry.load(img.dir, 'fdstore')}:latest`;
    // The launcher the units run: this checkout's CLI, from source.
    bin = join(work, 'tocfs');
    // Units run in /, where the bare name tsx would not resolve.
    await writeFile(bin, `#!/bin/sh\nexec ${process.execPath} --import ${import.meta.resolve('tsx')} ${join(REPO, 'src/cli/entry.ts')} "$@"\n`);
    await chmod(bin, 0o755);
    // Podman inside the container keeps its storage on the host's disk (an overlay upper on overlay would not do).
    podmanDir = join(work, 'p');
    await mkdir(join(podmanDir, 'root'), { recursive: true });
    await writeFile(join(podmanDir, 'storage.conf'), `[storage]\ndriver = "overlay"\ngraphroot = "${podmanDir}/root"\nrunroot = "${podmanDir}/run"\n\n[storage.options]\nadditionallayerstores = ["${STORE_DIR}:ref"]\n`);
    await writeFile(join(podmanDir, 'registries.conf'), `[[registry]]\nlocation = "${registry.host}"\ninsecure = true\n`);
    // nspawn mounts /proc/sys read-only: no sysctls for the container.
    await writeFile(join(podmanDir, 'containers.conf'), '[containers]\ndefault_sysctls = []\n[engine]\ncgroup_manager = "cgroupfs"\nlock_type = "file"\n');
    podmanEnv = { CONTAINERS_STORAGE_CONF: join(podmanDir, 'storage.conf'), CONTAINERS_REGISTRIES_CONF: join(podmanDir, 'registries.conf'), CONTAINERS_CONF: join(podmanDir, 'containers.conf') };
    c = await SystemdContainer.boot(join(work, 'container'), `tocfs-test-${process.pid}`, [podmanDir]);
    const installed = await run('sh', [join(REPO, 'scripts/install.sh'), '--prefix', c.root, '--bin', bin, '--no-start']);
    assert.equal(installed.code, 0, installed.stderr);
    await mkdir(join(c.root, 'etc/tocfs/mounts'), { recursive: true });
    await mkdir(join(c.root, `etc/systemd/system/${MOUNT_UNIT}.d`), { recursive: true });
    await writeFile(join(c.root, 'etc/tocfs/mounts/fdtest.env'), `IMAGE=oci:${img.dir}\nMOUNTPOINT=${MOUNTPOINT}\nTOCFS_ARGS=--prefetch none\n`);
    // The test registry speaks plain HTTP on loopback.
    await mkdir(join(c.root, `etc/systemd/system/${STORE_UNIT}.d`), { recursive: true });
    await writeFile(join(c.root, `etc/systemd/system/${STORE_UNIT}.d/test.conf`), '[Service]\nEnvironment=TOCFS_REGISTRY_TLS_VERIFY=false TOCFS_LOG_LEVEL=debug TOCFS_METRICS_ADDRESS=\n');
    await c.systemctl('daemon-reload');
  });

  after(async () => {
    if (c) {
      for (const unit of [MOUNT_UNIT, STORE_UNIT]) if (process.env.TOCFS_TEST_VERBOSE) console.log(await c.journal(unit).catch(() => ''));
      await c.stop();
    }
    await registry?.stop();
    if (work) await run('rm', ['-rf', work]);
  });

  it('tocfs-mount@: a reader sees no error across two restarts; a stop unmounts and empties the store', async (t) => {
    await c.systemctl('start', MOUNT_UNIT);
    const r = await restartUnderReader(c, c, MOUNT_UNIT, MOUNTPOINT, MOUNTPOINT, want);
    t.diagnostic(`${r.reads} reads in ${r.rounds} rounds, 0 errors; longest read ${r.maxStallMs} ms`);
    await c.systemctl('stop', MOUNT_UNIT);
    assert.equal(await mountId(c, MOUNTPOINT), undefined, 'a stop unmounts');
    assert.equal(await c.property(MOUNT_UNIT, 'NFileDescriptorStore'), '0', 'systemd closed what it kept');
    assert.match(await c.journal(MOUNT_UNIT), /"msg":"unmounted"|unmounted/);
  });

  it('tocfs-mount@ killed with SIGKILL: systemd restarts it and the new start serves, whether ExecStopPost detached the mount or not', async () => {
    const killAndWait = async (): Promise<void> => {
      const pid = await c.property(MOUNT_UNIT, 'MainPID');
      await c.exec(['kill', '-KILL', pid]);
      await waitFor('systemd to restart the unit', async () => {
        const now = await c.property(MOUNT_UNIT, 'MainPID');
        return now !== pid && now !== '0' && (await c.property(MOUNT_UNIT, 'ActiveState')) === 'active';
      });
      const listing = await c.exec(['ls', `${MOUNTPOINT}/data`], 30_000);
      assert.equal(listing.stdout.trim().split('\n').length, FILES, `the new start serves the mount: ${listing.stderr}`);
      assert.equal(await c.property(MOUNT_UNIT, 'NFileDescriptorStore'), '1', 'the new mount is kept');
    };
    await c.systemctl('start', MOUNT_UNIT);
    // As shipped: ExecStopPost detaches the mount; the kernel ends the connection, and systemd drops the descriptor it kept.
    await killAndWait();
    assert.doesNotMatch(await c.journal(MOUNT_UNIT), /cannot go on serving/);
    // Without that ExecStopPost the connection lives on in the fd store with nobody answering: the new start detaches it first.
    await writeFile(join(c.root, `etc/systemd/system/${MOUNT_UNIT}.d/no-stop-post.conf`), '[Service]\nExecStopPost=\n');
    await c.systemctl('daemon-reload');
    await killAndWait();
    assert.match(await c.journal(MOUNT_UNIT), /cannot go on serving the FUSE session systemd kept \(the last run of the unit left no session state/);
    await c.systemctl('stop', MOUNT_UNIT);
    await rm(join(c.root, `etc/systemd/system/${MOUNT_UNIT}.d`), { recursive: true, force: true });
    await c.systemctl('daemon-reload');
  });

  it('tocfs-store under Podman: a container reading from the store in a loop sees no error across two restarts', { skip: podmanSkip }, async (t) => {
    await c.systemctl('start', STORE_UNIT);
    const podman = (args: string[], timeoutMs = 180_000): Promise<RunResult> =>
      c.exec(['env', ...Object.entries(podmanEnv).map(([k, v]) => `${k}=${v}`), 'podman', '--runtime', 'crun', '--events-backend', 'file', ...args], timeoutMs);
    const ok = async (args: string[]): Promise<string> => {
      const r = await podman(args);
      assert.equal(r.code, 0, `podman ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    await ok(['pull', '--tls-verify=false', storeRef]);
    const out = join(podmanDir, 'out');
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'want.json'), JSON.stringify(want));
    await writeFile(join(out, 'probe.py'), PODMAN_PROBE);
    const python = [`/host${LOADER}`, '--library-path', `/host${dirname(LOADER!)}`, '/host/usr/bin/python3', '/out/probe.py'];
    // The container's cgroup hierarchies are read-only here: crun runs it without cgroups.
    await ok(['run', '-d', '--name', 'probe', '--net=none', '--cgroups=disabled', '-v', '/:/host:ro', '-v', `${out}:/out`, '-e', 'PYTHONHOME=/host/usr', storeRef, ...python]);
    await waitFor('the probe to read a round', async () => existsSync(join(out, 'started')));
    for (let round = 1; round <= 2; round++) {
      const before = await c.property(STORE_UNIT, 'MainPID');
      await c.systemctl('restart', STORE_UNIT);
      assert.notEqual(await c.property(STORE_UNIT, 'MainPID'), before, `round ${round}: a new store serves`);
      await new Promise((r) => setTimeout(r, 1500));
    }
    await writeFile(join(out, 'stop'), '');
    const waited = await podman(['wait', 'probe'], 60_000);
    const summary = JSON.parse(await readFile(join(out, 'probe.json'), 'utf8').catch(() => '{}')) as ReaderSummary;
    assert.ok(summary.rounds > 2, `the probe kept reading (${JSON.stringify(summary)} ${waited.stdout} ${(await podman(['logs', 'probe'])).stderr})`);
    assert.deepEqual(summary.errors, [], `the container saw ${summary.errorCount} errors across the restarts`);
    assert.equal(waited.stdout.trim(), '0', 'the probe exited 0');
    t.diagnostic(`Podman container: ${summary.reads} reads in ${summary.rounds} rounds, 0 errors; longest read ${summary.maxStallMs} ms`);
    await ok(['rm', 'probe']);
    await ok(['rmi', storeRef]);
    await c.systemctl('stop', STORE_UNIT);
  });

  it('tocfs-store: a reader of a layer sees no error across two restarts', async (t) => {
    await c.systemctl('start', STORE_UNIT);
    const layer = `${STORE_DIR}/${encodeRef(storeRef)}/${layerDigest}/diff`;
    const first = await c.exec(['ls', `${layer}/data`], 60_000);
    assert.equal(first.stdout.trim().split('\n').length, FILES, `the store serves the layer: ${first.stderr}`);
    const r = await restartUnderReader(c, c, STORE_UNIT, STORE_DIR, layer, want);
    t.diagnostic(`${r.reads} reads in ${r.rounds} rounds, 0 errors; longest read ${r.maxStallMs} ms`);
    await c.systemctl('stop', STORE_UNIT);
    assert.equal(await mountId(c, STORE_DIR), undefined, 'a stop unmounts the store');
  });
  it("a user's tocfs-store (systemctl --user; the own session through fusermount): a reader sees no error across two restarts", async (t) => {
    const restoreFuse = openFuseToAll(); // the container shares the host's /dev/fuse node
    try {
      const user = await c.userManager('tocfsu');
      const installed = await user.exec(['sh', join(REPO, 'scripts/install.sh'), '--user', '--bin', bin, '--no-start']);
      assert.equal(installed.code, 0, installed.stderr);
      const dropIn = `${user.home}/.config/systemd/user/${STORE_UNIT}.d`;
      const made = await user.exec(['sh', '-c', `mkdir -p ${dropIn} && printf '[Service]\\nEnvironment=TOCFS_REGISTRY_TLS_VERIFY=false TOCFS_LOG_LEVEL=debug TOCFS_METRICS_ADDRESS=\\n' > ${dropIn}/test.conf`]);
      assert.equal(made.code, 0, made.stderr);
      await user.systemctl('daemon-reload');
      await user.systemctl('start', STORE_UNIT);
      const storeDir = `${user.home}/.local/share/tocfs/store`;
      const init = (await user.journal(STORE_UNIT)).split('\n').find((l) => l.includes('FUSE session initialised'));
      assert.ok(init, `the own session serves the user's store:\n${(await user.journal(STORE_UNIT)).slice(-3000)}`);
      assert.equal(JSON.parse(init).passthrough, false, 'no passthrough without CAP_SYS_ADMIN');
      const layer = `${storeDir}/${encodeRef(storeRef)}/${layerDigest}/diff`;
      const first = await user.exec(['ls', `${layer}/data`], 60_000);
      assert.equal(first.stdout.trim().split('\n').length, FILES, `the user's store serves the layer: ${first.stderr}`);
      const r = await restartUnderReader(user, c, STORE_UNIT, storeDir, layer, want);
      t.diagnostic(`${r.reads} reads in ${r.rounds} rounds, 0 errors; longest read ${r.maxStallMs} ms`);
      await user.systemctl('stop', STORE_UNIT);
      assert.equal(await mountId(c, storeDir), undefined, 'a stop unmounts (fusermount -u)');
    } finally {
      restoreFuse();
    }
  });
});
