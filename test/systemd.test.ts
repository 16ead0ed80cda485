/**
 * The systemd side of the store: the units pass `systemd-analyze verify` as installed,
 * scripts/install.sh installs them, a config file and the storage.conf line (idempotent,
 * --dry-run changes nothing; --user, run as a user, the user unit and the user's files), and `tocfs store --foreground` and `tocfs mount --foreground` tell $NOTIFY_SOCKET READY=1
 * once the store answers and STOPPING=1 when it stops (received by a real datagram socket).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import { buildImage } from './helpers/images.js';
import { isFuseMounted, startStore } from './helpers/store.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const INSTALL = join(REPO, 'scripts', 'install.sh');
const SYSTEMD_NOTIFY = '/usr/bin/systemd-notify';

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) }));
  });
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(join(e.parentPath ?? (e as unknown as { path: string }).path, e.name).slice(dir.length + 1));
  return out.sort();
}

/** [section] key = value lines of a unit file (repeated keys kept in order). */
function unitValues(text: string, section: string, key: string): string[] {
  let current = '';
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const s = /^\[(.+)\]$/.exec(line.trim());
    if (s) current = s[1]!;
    else if (current === section && line.startsWith(`${key}=`)) out.push(line.slice(key.length + 1));
  }
  return out;
}

function layerStores(toml: string): string[] {
  const doc = parse(toml) as { storage?: { options?: { additionallayerstores?: string[] } } };
  return doc.storage?.options?.additionallayerstores ?? [];
}

describe('systemd units and scripts/install.sh', () => {
  let work: string;
  let bin: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-systemd-test-'));
    // systemd-analyze verify checks that ExecStart's program exists and is executable.
    bin = join(work, 'bin', 'tocfs');
    await mkdir(join(work, 'bin'));
    await writeFile(bin, `#!/bin/sh\nexec ${process.execPath} --import tsx ${join(REPO, 'src/cli/entry.ts')} "$@"\n`);
    await chmod(bin, 0o755);
  });

  after(async () => {
    if (!work) return;
    // A store that died without unmounting would make the removal fail with EBUSY.
    if (await isFuseMounted(join(work, 'store'))) await run('umount', ['-l', join(work, 'store')]);
    await rm(work, { recursive: true, force: true });
  });

  it('the units say what the store needs: Type=notify, before the engines, lazy umount after stop, restart on failure', async () => {
    const store = await readFile(join(REPO, 'systemd', 'tocfs-store.service'), 'utf8');
    assert.deepEqual(unitValues(store, 'Service', 'Type'), ['notify']);
    assert.deepEqual(unitValues(store, 'Service', 'NotifyAccess'), ['all'], 'READY=1 comes from systemd-notify, a child process');
    const beforeUnits = unitValues(store, 'Unit', 'Before').join(' ').split(/\s+/);
    for (const engine of ['crio.service', 'podman.service']) assert.ok(beforeUnits.includes(engine), `Before=${engine}`);
    assert.deepEqual(unitValues(store, 'Service', 'ExecStart'), ['/usr/local/bin/tocfs store --foreground /var/lib/tocfs/store']);
    assert.deepEqual(unitValues(store, 'Service', 'ExecStopPost'), [`-/bin/sh -c '[ "$$SERVICE_RESULT" = success ] || exec umount -l /var/lib/tocfs/store'`], 'only an unclean exit leaves a mount to detach: a restart leaves it to the next start');
    assert.deepEqual(unitValues(store, 'Service', 'FileDescriptorStoreMax'), ['4'], 'systemd keeps the FUSE connection across a restart');
    assert.deepEqual(unitValues(store, 'Service', 'Restart'), ['on-failure']);
    const snippet = await readFile(join(REPO, 'systemd', 'storage.conf'), 'utf8');
    assert.deepEqual(layerStores(snippet), ['/var/lib/tocfs/store:ref']);
    const mount = await readFile(join(REPO, 'systemd', 'tocfs-mount@.service'), 'utf8');
    assert.match(unitValues(mount, 'Service', 'ExecStart')[0]!, /^\/usr\/local\/bin\/tocfs mount --foreground .*\$\{IMAGE\} \$\{MOUNTPOINT\}$/);
    assert.deepEqual(unitValues(mount, 'Service', 'EnvironmentFile'), ['-/etc/tocfs/mounts/%i.env']);
    assert.deepEqual(unitValues(mount, 'Service', 'FileDescriptorStoreMax'), ['4']);
  });

  it('install.sh --dry-run says what it would do and changes nothing', async () => {
    const prefix = join(work, 'dry');
    await mkdir(join(prefix, 'etc', 'containers'), { recursive: true });
    const original = '[storage]\ndriver = "overlay"\n';
    await writeFile(join(prefix, 'etc/containers/storage.conf'), original);
    const res = await run('sh', [INSTALL, '--prefix', prefix, '--bin', bin, '--dry-run']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /would install .*tocfs-store\.service/);
    assert.match(res.stdout, /would add \/var\/lib\/tocfs\/store:ref to additionallayerstores/);
    assert.deepEqual(await filesUnder(prefix), ['etc/containers/storage.conf']);
    assert.equal(await readFile(join(prefix, 'etc/containers/storage.conf'), 'utf8'), original);
  });

  it('install.sh installs units that systemd-analyze verify accepts, a config file and the storage.conf line; a second run changes nothing', async () => {
    const prefix = join(work, 'real');
    await mkdir(join(prefix, 'usr/share/containers'), { recursive: true });
    // No /etc/containers/storage.conf yet: the packaged one is the starting point (an /etc file replaces it whole).
    await writeFile(join(prefix, 'usr/share/containers/storage.conf'), '[storage]\ndriver = "overlay"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n\n[storage.options]\npull_options = {enable_partial_images = "false"}\n');
    const first = await run('sh', [INSTALL, '--prefix', prefix, '--bin', bin]);
    assert.equal(first.code, 0, first.stderr);
    const units = join(prefix, 'etc/systemd/system');
    const storeUnit = await readFile(join(units, 'tocfs-store.service'), 'utf8');
    assert.deepEqual(unitValues(storeUnit, 'Service', 'ExecStart'), [`${bin} store --foreground /var/lib/tocfs/store`]);
    const verify = await run('systemd-analyze', ['verify', '--man=no', join(units, 'tocfs-store.service'), join(units, 'tocfs-mount@hello.service')]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), '', 'systemd-analyze verify has no complaints');
    const conf = await readFile(join(prefix, 'etc/containers/storage.conf'), 'utf8');
    assert.deepEqual(layerStores(conf), ['/var/lib/tocfs/store:ref']);
    assert.match(conf, /graphroot = "\/var\/lib\/containers\/storage"/, 'the packaged settings are kept');
    assert.match(conf, /pull_options/);
    const config = await readFile(join(prefix, 'etc/tocfs/config.toml'), 'utf8');
    assert.doesNotThrow(() => parse(config), 'the default config file is valid TOML');
    assert.ok((await stat(join(prefix, 'etc/tocfs/mounts'))).isDirectory());
    const before = await filesUnder(prefix);
    const second = await run('sh', [INSTALL, '--prefix', prefix, '--bin', bin]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /nothing to do/);
    assert.deepEqual(await filesUnder(prefix), before);
    assert.equal(await readFile(join(prefix, 'etc/containers/storage.conf'), 'utf8'), conf);
  });

  it('install.sh merges into an existing storage.conf: another store kept after ours, or a new key under [storage.options]', async () => {
    const cases: Array<[string, string[]]> = [
      ['[storage]\ndriver = "overlay"\n\n[storage.options]\nadditionallayerstores = ["/other/store:ref"]\nmount_program = "/usr/bin/fuse-overlayfs"\n', ['/srv/als:ref', '/other/store:ref']],
      ['[storage]\ndriver = "overlay"\n\n[storage.options]\nadditionallayerstores = []\n', ['/srv/als:ref']],
      ['[storage]\ndriver = "overlay"\n\n[storage.options]\nmount_program = "/usr/bin/fuse-overlayfs"\n', ['/srv/als:ref']],
      ['[storage]\ndriver = "overlay"\n', ['/srv/als:ref']],
    ];
    for (const [i, [text, want]] of cases.entries()) {
      const prefix = join(work, `merge-${i}`);
      await mkdir(join(prefix, 'etc/containers'), { recursive: true });
      await writeFile(join(prefix, 'etc/containers/storage.conf'), text);
      const res = await run('sh', [INSTALL, '--prefix', prefix, '--bin', bin, '--store-dir', '/srv/als']);
      assert.equal(res.code, 0, res.stderr);
      const conf = await readFile(join(prefix, 'etc/containers/storage.conf'), 'utf8');
      assert.deepEqual(layerStores(conf), want, `case ${i}:\n${conf}`);
      if (text.includes('mount_program')) assert.match(conf, /mount_program = "\/usr\/bin\/fuse-overlayfs"/);
      assert.equal(await readFile(join(prefix, 'etc/containers/storage.conf.tocfs-backup'), 'utf8'), text, 'the previous file is kept as a backup');
      assert.match(await readFile(join(prefix, 'etc/systemd/system/tocfs-store.service'), 'utf8'), /^ExecStopPost=.*exec umount -l \/srv\/als'$/m);
    }
    const multi = join(work, 'merge-multiline');
    await mkdir(join(multi, 'etc/containers'), { recursive: true });
    await writeFile(join(multi, 'etc/containers/storage.conf'), '[storage.options]\nadditionallayerstores = [\n  "/other:ref",\n]\n');
    const res = await run('sh', [INSTALL, '--prefix', multi, '--bin', bin]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /multi-line additionallayerstores array: add "\/var\/lib\/tocfs\/store:ref" to it by hand/);
    const bad = await run('sh', [INSTALL, '--prefix', multi, '--bin', bin, '--store-dir', 'relative/dir']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /must be absolute/);
  });

  it('the user unit (systemctl --user) runs the store in the home directory, Type=notify, fusermount after stop, wanted by default.target', async () => {
    const unit = await readFile(join(REPO, 'systemd', 'user', 'tocfs-store.service'), 'utf8');
    assert.deepEqual(unitValues(unit, 'Service', 'Type'), ['notify']);
    assert.deepEqual(unitValues(unit, 'Service', 'NotifyAccess'), ['all']);
    assert.deepEqual(unitValues(unit, 'Service', 'ExecStart'), ['/usr/local/bin/tocfs store --foreground %h/.local/share/tocfs/store']);
    assert.deepEqual(unitValues(unit, 'Service', 'ExecStopPost'), [`-/bin/sh -c '[ "$$SERVICE_RESULT" = success ] || exec /usr/bin/fusermount -u -z %h/.local/share/tocfs/store'`], 'a user cannot umount; fusermount can; only after an unclean exit');
    assert.deepEqual(unitValues(unit, 'Service', 'FileDescriptorStoreMax'), ['4']);
    assert.deepEqual(unitValues(unit, 'Install', 'WantedBy'), ['default.target']);
    assert.deepEqual(unitValues(unit, 'Unit', 'After'), [], 'a user manager has no network-online.target');
  });

  /** Runs install.sh --user as nobody with `home` as HOME (made and handed to nobody). */
  async function installAsUser(home: string, args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
    await mkdir(home, { recursive: true });
    await run('chown', ['-R', '65534:65534', home]);
    return run('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', 'env', '-i', 'PATH=/usr/local/bin:/usr/bin:/bin', `HOME=${home}`, 'sh', INSTALL, '--user', '--bin', bin, '--no-start', ...args]);
  }

  it('install.sh --user, as a user: the user unit (systemd-analyze verify --user), a config file and ~/.config/containers/storage.conf made anew without root\'s settings; a second run changes nothing', async () => {
    await chmod(work, 0o755);
    const home = join(work, 'home-new');
    const first = await installAsUser(home);
    assert.equal(first.code, 0, first.stderr);
    const store = join(home, '.local/share/tocfs/store');
    assert.deepEqual(await filesUnder(home), ['.config/containers/storage.conf', '.config/systemd/user/tocfs-store.service', '.config/tocfs/config.toml']);
    for (const f of await filesUnder(home)) assert.equal((await stat(join(home, f))).uid, 65534, `${f} belongs to the user`);
    const unit = join(home, '.config/systemd/user/tocfs-store.service');
    const text = await readFile(unit, 'utf8');
    assert.deepEqual(unitValues(text, 'Service', 'ExecStart'), [`${bin} store --foreground ${store}`]);
    assert.deepEqual(unitValues(text, 'Service', 'ExecStopPost'), [`-/bin/sh -c '[ "$$SERVICE_RESULT" = success ] || exec /usr/bin/fusermount -u -z ${store}'`]);
    const runtime = join(work, 'user-runtime');
    await mkdir(runtime, { recursive: true, mode: 0o700 });
    const verify = await run('systemd-analyze', ['verify', '--user', '--man=no', unit], { ...process.env, XDG_RUNTIME_DIR: runtime });
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), '', 'systemd-analyze verify --user has no complaints');
    const conf = await readFile(join(home, '.config/containers/storage.conf'), 'utf8');
    assert.deepEqual(layerStores(conf), [`${store}:ref`]);
    assert.doesNotMatch(conf, /graphroot|runroot/, "no graph root or run root: rootless Podman's defaults stay in force");
    assert.match(first.stdout, /rootless Podman then reads it instead of \/etc\/containers\/storage\.conf/, 'says that a new storage.conf replaces the system one');
    const userConfig = await readFile(join(home, '.config/tocfs/config.toml'), 'utf8');
    assert.doesNotThrow(() => parse(userConfig), 'the default config file is valid TOML');
    const second = await installAsUser(home);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /nothing to do/);
    assert.equal(await readFile(join(home, '.config/containers/storage.conf'), 'utf8'), conf);
  });

  it("install.sh --user merges into the user's storage.conf (kept as a backup, said aloud), refuses a driver other than overlay, and refuses root", async () => {
    const home = join(work, 'home-existing');
    const original = '[storage]\ndriver = "overlay"\ngraphroot = "/srv/me/containers"\n\n[storage.options]\nadditionallayerstores = ["/srv/other:ref"]\n';
    await mkdir(join(home, '.config/containers'), { recursive: true });
    await writeFile(join(home, '.config/containers/storage.conf'), original);
    const res = await installAsUser(home, ['--store-dir', '/srv/me/store']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /add \/srv\/me\/store:ref to additionallayerstores in .*\.config\/containers\/storage\.conf/);
    const conf = await readFile(join(home, '.config/containers/storage.conf'), 'utf8');
    assert.deepEqual(layerStores(conf), ['/srv/me/store:ref', '/srv/other:ref']);
    assert.match(conf, /graphroot = "\/srv\/me\/containers"/, "the user's settings are kept");
    assert.equal(await readFile(join(home, '.config/containers/storage.conf.tocfs-backup'), 'utf8'), original);

    const vfsHome = join(work, 'home-vfs');
    const vfs = '[storage]\ndriver = "vfs"\n';
    await mkdir(join(vfsHome, '.config/containers'), { recursive: true });
    await writeFile(join(vfsHome, '.config/containers/storage.conf'), vfs);
    const refused = await installAsUser(vfsHome);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /driver other than overlay/);
    assert.equal(await readFile(join(vfsHome, '.config/containers/storage.conf'), 'utf8'), vfs, 'left unchanged');

    const asRoot = await run('sh', [INSTALL, '--user', '--prefix', join(work, 'root-user'), '--bin', bin]);
    assert.equal(asRoot.code, 2);
    assert.match(asRoot.stderr, /run it as that user/);
  });

  /** A real datagram socket standing in for systemd's notify socket; `text()` is what arrived so far. */
  async function notifyReceiver(socket: string): Promise<{ text(): string; waitFor(what: string): Promise<void>; close(): void }> {
    const receiver = spawn('python3', ['-c', 'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("listening",flush=True)\nwhile True:\n  d=s.recvmsg(4096)[0]\n  print(repr(d.decode()),flush=True)', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
    let received = '';
    receiver.stdout.on('data', (d: Buffer) => (received += d.toString()));
    const waitFor = async (what: string): Promise<void> => {
      for (let i = 0; i < 200 && !received.includes(what); i++) await new Promise((r) => setTimeout(r, 50));
    };
    await waitFor('listening');
    assert.ok(received.includes('listening'), 'python3 datagram receiver started');
    return { text: () => received, waitFor, close: () => receiver.kill() };
  }

  /**
   * Environment for a daemon under "systemd": NOTIFY_SOCKET, and the real systemd-notify
   * lingering a second after it has sent, so a SIGTERM sent on READY=1 reaches the daemon
   * while it is still reporting readiness (which must already stop it cleanly).
   */
  async function notifyEnv(socket: string): Promise<NodeJS.ProcessEnv> {
    const slowNotify = join(work, 'slow-notify');
    await mkdir(slowNotify, { recursive: true });
    await writeFile(join(slowNotify, 'systemd-notify'), `#!/bin/sh\n${SYSTEMD_NOTIFY} "$@"\nstatus=$?\nsleep 1\nexit $status\n`);
    await chmod(join(slowNotify, 'systemd-notify'), 0o755);
    return { NOTIFY_SOCKET: socket, PATH: `${slowNotify}:${process.env.PATH}` };
  }

  it('tocfs store --foreground sends READY=1 once the store answers and STOPPING=1 on SIGTERM', async () => {
    const socket = join(work, 'notify.sock');
    const receiver = await notifyReceiver(socket);
    try {
      const store = await startStore(join(work, 'store'), join(work, 'cache'), [], await notifyEnv(socket));
      await receiver.waitFor('READY=1');
      assert.match(receiver.text(), /READY=1\\nSTATUS=serving .*\\nMAINPID=(\d+)/);
      assert.equal(Number(/MAINPID=(\d+)/.exec(receiver.text())![1]), store.child.pid, 'MAINPID names the store process');
      assert.equal(await isFuseMounted(store.dir), true, 'mounted when READY=1 arrives');
      assert.equal(await store.stop('SIGTERM'), 0);
      assert.match(receiver.text(), /STOPPING=1/);
      assert.equal(await isFuseMounted(store.dir), false);
    } finally {
      receiver.close();
    }
  });

  it('tocfs mount --foreground (tocfs-mount@.service) sends READY=1 once mounted and unmounts on a SIGTERM that follows at once', async () => {
    const image = await buildImage(join(work, 'image'), { format: 'zstd:chunked', layers: [[{ path: 'etc/greeting', content: 'hello from a unit\n' }]] });
    const mnt = join(work, 'mnt');
    await mkdir(mnt);
    const socket = join(work, 'notify-mount.sock');
    const receiver = await notifyReceiver(socket);
    try {
      const env = { ...process.env, ...(await notifyEnv(socket)), TOCFS_CONFIG: '' };
      const args = ['--import', 'tsx', join(REPO, 'src/cli/entry.ts'), 'mount', '--foreground', '--cache-dir', join(work, 'mount-cache'), '--metrics-address', '', `oci:${image.dir}`, mnt];
      const daemon = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      daemon.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((r) => daemon.once('exit', (code) => r(code)));
      try {
        await receiver.waitFor('READY=1');
        assert.match(receiver.text(), /READY=1\\nSTATUS=serving oci:.* at .*\\nMAINPID=(\d+)/, stderr);
        assert.equal(await readFile(join(mnt, 'etc/greeting'), 'utf8'), 'hello from a unit\n', 'the mount serves the image when READY=1 arrives');
        daemon.kill('SIGTERM');
        assert.equal(await exited, 0, stderr);
        assert.match(receiver.text(), /STOPPING=1/);
        assert.equal(await isFuseMounted(mnt), false, 'unmounted');
      } finally {
        if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL');
        if (await isFuseMounted(mnt)) await run('umount', ['-l', mnt]);
      }
    } finally {
      receiver.close();
    }
  });
});
