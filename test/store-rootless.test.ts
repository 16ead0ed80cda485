/**
 * Rootless end to end with Debian's Podman 4.3.1, and trixie's 5.4.2 in the root
 * scripts/setup-trixie.sh builds (entered by pivot_root: a chrooted process may not make the
 * user namespace rootless Podman needs): a real non-root user (useradd, two
 * subordinate ID ranges in /etc/subuid and /etc/subgid, /dev/fuse 0666 as Debian ships it)
 * runs `tocfs store` in its own home and names it in ~/.config/containers/storage.conf;
 * rootless Podman, as that user, pulls lazily from a real docker-registry on 127.0.0.1 and
 * runs containers. Checked: the store's control files belong to the user (Podman's `use` and
 * release are counted, in the journal too), the store shows TOC owners as rootless Podman
 * maps them (container 0 → the user, n → the subordinate ranges in turn, beyond them 65534),
 * and inside the container every file has the owner, mode and bytes the image gives it.
 *
 * The image holds no programs: containers run the host's through its loader from a
 * read-only bind mount of / at /host (helpers/podman.ts's trick, rootless here).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { buildImage, seededBytes, seededContent, type BuiltImage, type FileSpec } from './helpers/images.js';
import { blobBytesServed, startRegistry, type TestRegistry } from './helpers/registry.js';
import { isFuseMounted, registryLogSettled, type RunningStore } from './helpers/store.js';
import { have, unmountUnder } from './helpers/podman.js';
import { trixieSkipReason, TRIXIE_ROOT } from './helpers/trixie.js';
import { createTestUser, openFuseToAll, rootlessSkipReason, REPO, RootlessPodman, RootlessRoot, startStoreAs, type SubRange, type TestUser } from './helpers/rootless.js';
import { encodeRef } from '../src/store/names.js';
import { useJournalFile } from '../src/store/use-counts.js';

const hex = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
const OVERFLOW = 65534;
const ENTRY = fileURLToPath(new URL('../src/cli/entry.ts', import.meta.url));

/** Files with distinctive owners and modes: root's, uid 1000's (end of the first range), one in the second range, one beyond every range. */
const DATA = seededBytes('rootless-data', 300_000);
const FILES: FileSpec[] = [
  { path: 'etc', type: 'dir', mode: 0o755 },
  { path: 'etc/motd', content: 'hello from a rootless container\n', mode: 0o644 },
  { path: 'etc/root-only', content: "root's secret\n", mode: 0o600 },
  { path: 'home', type: 'dir', mode: 0o755 },
  { path: 'home/app', type: 'dir', mode: 0o750, uid: 1000, gid: 1000 },
  { path: 'home/app/data.bin', content: DATA, mode: 0o640, uid: 1000, gid: 1000 },
  { path: 'srv', type: 'dir', mode: 0o711, uid: 4242, gid: 5151 },
  { path: 'srv/tool', content: '#!/bin/false\n', mode: 0o4755, uid: 4242, gid: 5151 },
  { path: 'opt', type: 'dir', mode: 0o755 },
  { path: 'opt/far', content: 'owned beyond the ranges\n', mode: 0o664, uid: 70000, gid: 70001 },
  { path: 'data', type: 'dir', mode: 0o755 },
  { path: 'data/big.bin', content: seededContent('rootless-big', 8 * 1024 * 1024), mode: 0o644 },
];
const regular = FILES.filter((f) => f.type === undefined && f.path !== 'data/big.bin');

/** Debian bookworm's Podman 4.3.1 on the host; trixie's 5.4.2 in the root scripts/setup-trixie.sh builds. */
const FLAVORS = [
  { name: 'Podman 4.3.1', skip: rootlessSkipReason(), trixie: false },
  { name: 'Podman 5.4.2', skip: rootlessSkipReason() || trixieSkipReason(), trixie: true },
];

for (const flavor of FLAVORS) describe(`tocfs store run by a non-root user, with rootless ${flavor.name}`, { skip: flavor.skip, timeout: 300_000 }, () => {
  let work: string;
  let user: TestUser;
  let restoreFuse: (() => void) | undefined;
  let registry: TestRegistry;
  let store: RunningStore;
  let podman: RootlessPodman;
  let root: RootlessRoot | null = null;
  let image: BuiltImage;
  let ref: string;
  let storeDir: string;
  let cacheDir: string;

  /** The host ID the store must show for container ID `id`: 0 is the user's own, then the ranges one after another. */
  const hostId = (id: number, own: number): number => {
    if (id === 0) return own;
    let inside = 1;
    for (const r of [...user.ranges].sort((a, b) => a.start - b.start)) {
      if (id < inside + r.count) return r.start + (id - inside);
      inside += r.count;
    }
    return OVERFLOW;
  };
  /** What the container shows: the container ID when the ranges map it, else the overflow ID. */
  const insideId = (id: number | undefined): number => {
    const n = id ?? 0;
    return hostId(n, user.uid) === OVERFLOW ? OVERFLOW : n;
  };
  const layer = (): BuiltImage['layers'][number] => image.layers[0]!;
  /** The layer's directory in the store, under the key this Podman looks it up by. */
  const layerDir = (): string => join(storeDir, encodeRef(ref), podman.storeKey(layer()));

  before(async () => {
    const missing = ['newuidmap', 'newgidmap', 'runuser', 'useradd'].filter((c) => !have(c));
    assert.deepEqual(missing, [], `rootless Podman needs ${missing.join(', ')} (scripts/setup.sh installs uidmap)`);
    work = await mkdtemp(join(tmpdir(), 'tocfs-store-rootless-'));
    await chmod(work, 0o755);
    // Two ranges: container IDs 1..1000 in the first, 1001..66536 in the second.
    const base = 3_000_000 + Math.floor(Math.random() * 1000) * 200_000;
    const ranges: SubRange[] = [
      { start: base, count: 1000 },
      { start: base + 100_000, count: 65536 },
    ];
    user = await createTestUser(work, ranges);
    restoreFuse = openFuseToAll();
    image = await buildImage(join(work, 'image'), { format: 'zstd:chunked', layers: [FILES] });
    registry = await startRegistry();
    await registry.load(image.dir, 'rootless');
    ref = `${registry.host}/rootless:latest`;
    storeDir = join(user.home, 'store');
    cacheDir = join(user.home, '.cache', 'tocfs');
    // The store before Podman's first command: the user's pause process keeps the mount
    // namespace it started in, and / is not a shared mount here (see docs/guide.md).
    store = await startStoreAs(user, storeDir, cacheDir);
    // Podman 5 in the trixie root: the work dir (the user's home, the store's mount under it) bound inside.
    if (flavor.trixie) root = await RootlessRoot.enter(user, TRIXIE_ROOT, join(work, 'trixie-etc'), [work]);
    podman = await RootlessPodman.create(user, storeDir, registry.host, root);
  });

  after(async () => {
    await podman?.cleanup().catch(() => undefined);
    await root?.close();
    const code = await store?.stop('SIGTERM');
    if (store) assert.equal(code, 0, `tocfs store exited ${code} on SIGTERM:\n${store.log.slice(-20).join('\n')}`);
    if (store) assert.equal(await isFuseMounted(store.dir), false, 'the store unmounted cleanly on SIGTERM');
    await registry?.stop();
    if (work) await unmountUnder(work);
    await user?.remove();
    restoreFuse?.();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("the user's store is served by tocfs's own FUSE session, mounted through fusermount (READDIRPLUS; no passthrough, which needs CAP_SYS_ADMIN)", () => {
    assert.ok(!store.log.some((l) => l.includes('own FUSE session is unavailable')), `fell back to fuse-native:\n${store.log.filter((l) => l.includes('unavailable')).join('\n')}`);
    const init = store.log.find((l) => l.includes('FUSE session initialised'));
    assert.ok(init, 'the own session answered INIT');
    assert.deepEqual({ readdirplus: JSON.parse(init).readdirplus, passthrough: JSON.parse(init).passthrough }, { readdirplus: true, passthrough: false });
  });

  it('the store logs the map it uses: the user, then its subordinate ranges', () => {
    const line = store.log.find((l) => l.includes('file owners shown as rootless Podman maps them'));
    assert.ok(line, 'the store says it maps owners');
    const doc = JSON.parse(line) as { uids: unknown; gids: unknown };
    const want = (own: number): unknown => [{ inside: 0, outside: own, count: 1 }, { inside: 1, outside: user.ranges[0]!.start, count: 1000 }, { inside: 1001, outside: user.ranges[1]!.start, count: 65536 }];
    assert.deepEqual(doc.uids, want(user.uid));
    assert.deepEqual(doc.gids, want(user.gid));
  });

  it('rootless podman pulls lazily from the store: use is counted (no "permission denied during use"), the layer is linked, not downloaded', async () => {
    const { stderr } = await podman.ok(['pull', '--tls-verify=false', ref]);
    assert.doesNotMatch(stderr, /Unexpected error by Additional Layer Store/, 'Podman could create `use` and rmdir the layer directory');
    await registryLogSettled(registry);
    const pulled = blobBytesServed(registry.log, layer().digest);
    assert.ok(pulled < layer().size / 4, `the pull fetched ${pulled} bytes of the ${layer().size}-byte layer`);
    assert.ok((await podman.storeLayers()).some((l) => l === layerDir()), `the layer is linked to the store: ${(await podman.storeLayers()).join(' ')}`);
    // Lookup +1, CreateAs +1, release of the lookup's handle −1.
    assert.equal(store.log.filter((l) => l.includes('"msg":"use"')).length, 2, 'two uses');
    assert.equal(store.log.filter((l) => l.includes('"msg":"release"')).length, 1, 'one release');
  });

  it("the store's control files belong to the user; tree owners are mapped through the user's ranges", async () => {
    // As the user (FUSE lets in only the user who mounted the store), allowed to search every
    // directory (CAP_DAC_READ_SEARCH): on its own it may not enter /home/app (0750, a mapped owner).
    const st = (...paths: string[]): Promise<string[]> =>
      new Promise((resolve, reject) => {
        const caps = ['--inh-caps', '+dac_read_search', '--ambient-caps', '+dac_read_search'];
        execFile('setpriv', ['--reuid', String(user.uid), '--regid', String(user.gid), '--clear-groups', ...caps, 'stat', '-c', '%u %g %a', ...paths], { env: user.env }, (err, stdout, stderr) =>
          err ? reject(new Error(`stat as ${user.name}: ${stderr}`)) : resolve(stdout.trim().split('\n')),
        );
      });
    const dir = layerDir();
    assert.deepEqual(await st(storeDir, join(storeDir, encodeRef(ref)), dir, join(dir, 'info'), join(dir, 'blob')), [
      `${user.uid} ${user.gid} 755`,
      `${user.uid} ${user.gid} 755`,
      `${user.uid} ${user.gid} 755`,
      `${user.uid} ${user.gid} 444`,
      `${user.uid} ${user.gid} 444`,
    ]);
    const entries = FILES.filter((f) => f.path !== 'data/big.bin');
    const got = await st(...entries.map((f) => join(dir, 'diff', f.path)));
    const want = entries.map((f) => `${hostId(f.uid ?? 0, user.uid)} ${hostId(f.gid ?? 0, user.gid)} ${(f.mode ?? 0o644).toString(8)}`);
    assert.deepEqual(got, want, entries.map((f) => f.path).join(' '));
    // Spot checks of the map itself: the user, the first range's end, the second range, beyond.
    assert.equal(hostId(1000, user.uid), user.ranges[0]!.start + 999);
    assert.equal(hostId(4242, user.uid), user.ranges[1]!.start + 4242 - 1001);
    assert.equal(hostId(70000, user.uid), OVERFLOW);
  });

  it('inside the container: owners, modes and bytes as the image gives them (beyond the ranges: 65534)', async () => {
    const paths = FILES.filter((f) => f.path !== 'data/big.bin');
    const r = await podman.exec(ref, [], '/usr/bin/stat', '-c', '%u %g %a %n', ...paths.map((f) => `/${f.path}`));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      r.stdout.toString().trim().split('\n'),
      paths.map((f) => `${insideId(f.uid)} ${insideId(f.gid)} ${(f.mode ?? 0o644).toString(8)} /${f.path}`),
    );
    const sums = await podman.exec(ref, [], '/usr/bin/sha256sum', ...regular.map((f) => `/${f.path}`));
    assert.equal(sums.code, 0, sums.stderr);
    assert.deepEqual(
      sums.stdout.toString().trim().split('\n'),
      regular.map((f) => `${hex(f.content as Buffer | string)}  /${f.path}`),
    );
    await registryLogSettled(registry);
    const fetched = blobBytesServed(registry.log, layer().digest);
    assert.ok(fetched < layer().size / 4, `pull and runs fetched ${fetched} of ${layer().size} bytes (the 8 MiB file was never read)`);
  });

  it('a container user sees the owners: uid 1000 reads its 0640 file, not root\'s 0600 one', async () => {
    const own = await podman.exec(ref, ['--user', '1000:1000'], '/usr/bin/cat', '/home/app/data.bin');
    assert.equal(own.code, 0, own.stderr);
    assert.ok(own.stdout.equals(DATA), 'uid 1000 reads /home/app/data.bin');
    const root = await podman.exec(ref, ['--user', '1000:1000'], '/usr/bin/cat', '/etc/root-only');
    assert.notEqual(root.code, 0, 'uid 1000 cannot read /etc/root-only');
    assert.match(root.stderr + root.stdout.toString(), /Permission denied/);
    const other = await podman.exec(ref, ['--user', '4242:5151'], '/usr/bin/cat', '/home/app/data.bin');
    assert.notEqual(other.code, 0, 'uid 4242 cannot enter /home/app (0750, 1000:1000)');
  });

  it("the use counts are in the user's journal and `tocfs store status` as the user; podman rmi releases them and the store keeps serving", async () => {
    const journal = useJournalFile(cacheDir, storeDir);
    const js = await stat(journal);
    assert.deepEqual([js.uid, js.gid, js.mode & 0o777], [user.uid, user.gid, 0o600], 'the journal is the user\'s, 0600');
    const uses = async (): Promise<number | undefined> => {
      const r = await user.run(process.execPath, ['--import', 'tsx', ENTRY, 'store', 'status', '--json', storeDir], { cwd: REPO });
      assert.equal(r.code, 0, r.stderr);
      const doc = JSON.parse(r.stdout.toString()) as { layers: Array<{ key: string; uses: number }> };
      return doc.layers.find((l) => l.key === podman.storeKey(layer()))?.uses;
    };
    const waitFor = async (want: number): Promise<void> => {
      const deadline = Date.now() + 10_000;
      // A layer released to 0 may drop out of the status: that is 0 uses too.
      let got = (await uses()) ?? 0;
      while (got !== want && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        got = (await uses()) ?? 0;
      }
      assert.equal(got, want, `tocfs store status shows ${got} uses, expected ${want}`);
    };
    await waitFor(1);
    const journalText = await readFile(journal, 'utf8');
    assert.ok(journalText.includes(layer().digest), 'the journal names the layer');

    const { stderr } = await podman.ok(['rmi', '-f', ref]);
    assert.doesNotMatch(stderr, /Unexpected error by Additional Layer Store/);
    assert.ok(store.log.filter((l) => l.includes('"msg":"release"')).length >= 2, 'the store saw the release of podman rmi');
    await waitFor(0);
    assert.deepEqual(await podman.storeLayers(), []);

    await podman.ok(['pull', '--tls-verify=false', ref]);
    const again = await podman.exec(ref, [], '/usr/bin/cat', '/etc/motd');
    assert.equal(again.stdout.toString(), 'hello from a rootless container\n', again.stderr);
    await waitFor(1);
  });
});
