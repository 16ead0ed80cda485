/**
 * `kill -9` of `tocfs store` and a restart, end to end with Debian's Podman 4.3.1 and a real
 * docker-registry on 127.0.0.1 (images tocfs builds: no corpus needed):
 *
 * - the restarted store knows the use counts of the layers it served before, before Podman
 *   looks them up again (`tocfs store status`), and `podman rmi` releases them;
 * - new `podman pull` and `podman run` work after the restart;
 * - a container running across the restart sees what docs/guide.md ("When the store
 *   restarts") says, measured by a probe inside it (the host's python, through the host's
 *   loader from a bind mount of / at /host): ENOTCONN for everything that reaches the dead
 *   store, answers from the kernel's caches for the rest, no recovery by itself, and
 *   `podman stop` + `podman start` brings it back.
 * - with tocfs's own FUSE session, `tocfs store --takeover` replaces the store under that
 *   same probe twice and no round sees an error.
 */
import assert from 'node:assert/strict';
import { readFileSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadFuseDev } from '../src/fs/session/native.js';
import { runCli } from './helpers/cli.js';
import { buildImage, seededBytes, seededContent, type BuiltImage, type FileSpec } from './helpers/images.js';
import { have, LOADER, Podman, podmanSkipReason, RUN_LIMITS, unmountUnder } from './helpers/podman.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { isFuseMounted, startStore, type RunningStore } from './helpers/store.js';

const skip = podmanSkipReason() || (have('python3') ? false : 'python3 is needed (the probe inside the container)');
const fuseDev = loadFuseDev();
const sessionSkip = 'unavailable' in fuseDev ? `tocfs's own FUSE session is unavailable: ${fuseDev.unavailable}` : false;

/** One JSON line per round in /out/probe.log: each operation's result, "ok" or the errno name. */
const PROBE = `
import errno, json, os, subprocess, time
out = open('/out/probe.log', 'a', buffering=1)
held = os.open('/data/big.bin', os.O_RDONLY)
os.pread(held, 4096, 0)
old = '/data/f0000'
with open(old, 'rb') as f: f.read()
def attempt(fn):
    try:
        fn()
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def read_all(p):
    with open(p, 'rb') as f: f.read()
def run_image_cat():
    r = subprocess.run(['/bin/cat', old], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0: raise OSError(errno.EIO, 'exit %d' % r.returncode)
i = 1
while True:
    new = '/data/f%04d' % i
    out.write(json.dumps({
        't': time.time(),
        'stat_new': attempt(lambda: os.stat(new)),
        'read_new': attempt(lambda: read_all(new)),
        'stat_old': attempt(lambda: os.stat(old)),
        'read_old': attempt(lambda: read_all(old)),
        'pread_held_new': attempt(lambda: os.pread(held, 4096, (i % 127 + 1) * 1048576)),
        'pread_held_old': attempt(lambda: os.pread(held, 4096, 0)),
        'listdir': attempt(lambda: os.listdir('/data')),
        'exec_image_cat': attempt(run_image_cat),
    }) + '\\n')
    i = i % 999 + 1
    time.sleep(0.3)
`;

type ProbeLine = Record<string, string> & { t: number };
const OPERATIONS = ['stat_new', 'read_new', 'stat_old', 'read_old', 'pread_held_new', 'pread_held_old', 'listdir', 'exec_image_cat'];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The host's cat, its libc and loader, as an image layer (so the container can exec a program from the store). */
function programsLayer(): FileSpec[] {
  const file = (path: string, from: string): FileSpec => ({ path, content: readFileSync(realpathSync(from)), mode: 0o755 });
  return [
    { path: 'bin', type: 'dir' }, { path: 'lib', type: 'dir' }, { path: 'lib/x86_64-linux-gnu', type: 'dir' }, { path: 'lib64', type: 'dir' },
    file('bin/cat', '/usr/bin/cat'), file('lib/x86_64-linux-gnu/libc.so.6', '/lib/x86_64-linux-gnu/libc.so.6'), file('lib64/ld-linux-x86-64.so.2', '/lib64/ld-linux-x86-64.so.2'),
  ];
}

/** The image the probe runs in: the host's cat with its libc and loader, and /data to read. */
function buildProbeImage(work: string): Promise<BuiltImage> {
  const data: FileSpec[] = [{ path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('big', 128 * 1024 * 1024) }];
  // Enough files and offsets (1 MiB apart: beyond the kernel's read-ahead) that the probe does not come back to one it read for a while (38 s of rounds for big.bin).
  for (let i = 0; i < 1000; i++) data.push({ path: `data/f${String(i).padStart(4, '0')}`, content: seededBytes(`f${i}`, 4096) });
  return buildImage(join(work, 'app'), { format: 'zstd:chunked', layers: [programsLayer(), data] });
}

/** A directory for the probe's script and log, mounted at /out in the container. */
async function probeDir(work: string): Promise<string> {
  const out = join(work, 'out');
  await mkdir(out);
  await writeFile(join(out, 'probe.py'), PROBE);
  return out;
}

async function probeLinesIn(out: string): Promise<ProbeLine[]> {
  return (await readFile(join(out, 'probe.log'), 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as ProbeLine);
}

async function tearDown(w: { podman?: Podman; store?: RunningStore; work?: string; registry?: TestRegistry }): Promise<void> {
  await w.podman?.cleanup().catch(() => undefined);
  await w.store?.stop('SIGTERM');
  if (w.work) {
    await unmountUnder(w.work);
    await rm(w.work, { recursive: true, force: true });
  }
  await w.registry?.stop();
}

interface StatusLayer {
  key: string;
  ref: string;
  uses: number;
  state: string;
  digest: string;
  format: string;
}

/** `tocfs store status --json` once it shows what `until` waits for (the store refreshes it every 2 s). */
async function storeStatus(dir: string, until: (layers: StatusLayer[]) => boolean = () => true, what = 'a status'): Promise<StatusLayer[]> {
  let last = '';
  for (let i = 0; i < 50; i++) {
    const r = await runCli(['store', 'status', '--json', dir]);
    if (r.code === 0) {
      const layers = (JSON.parse(r.stdout.toString()) as { layers: StatusLayer[] }).layers;
      if (until(layers)) return layers;
      last = JSON.stringify(layers);
    } else last = r.stderr;
    await sleep(200);
  }
  throw new Error(`tocfs store status did not show ${what}; it showed: ${last}`);
}

describe('tocfs store: kill -9 and a restart, with Podman 4.3.1', { skip, timeout: 300_000 }, () => {
  let work: string;
  let registry: TestRegistry;
  let store: RunningStore;
  let podman: Podman;
  let app: BuiltImage;
  let other: BuiltImage;
  let out: string;
  const ref = (repo: string): string => `${registry.host}/${repo}:latest`;
  const startTheStore = (): Promise<RunningStore> => startStore(join(work, 'store'), join(work, 'cache'));

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-store-restart-'));
    app = await buildProbeImage(work);
    other = await buildImage(join(work, 'other'), { format: 'estargz', layers: [[{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'pulled after the restart\n' }]] });
    registry = await startRegistry();
    await registry.load(app.dir, 'app');
    await registry.load(other.dir, 'other');
    store = await startTheStore();
    podman = await Podman.create(work, store.dir, registry.host);
    out = await probeDir(work);
  });

  after(() => tearDown({ podman, store, work, registry }));

  const probeLines = (): Promise<ProbeLine[]> => probeLinesIn(out);
  /** Waits for `n` probe rounds that started after `since` (seconds since the epoch). */
  const roundsAfter = async (since: number, n = 2): Promise<ProbeLine[]> => {
    for (let i = 0; i < 150; i++) {
      const lines = (await probeLines()).filter((l) => l.t > since);
      if (lines.length >= n) return lines;
      await sleep(100);
    }
    throw new Error(`the probe wrote no round after ${since}: ${JSON.stringify((await probeLines()).slice(-2))}`);
  };
  const results = (l: ProbeLine): Record<string, string> => Object.fromEntries(OPERATIONS.map((o) => [o, l[o]!]));
  const allOk = Object.fromEntries(OPERATIONS.map((o) => [o, 'ok']));

  it('a running container gets ENOTCONN from the dead store, stays so after the restart, and podman stop + start brings it back; the counts survive', async () => {
    await podman.ok(['pull', '--tls-verify=false', ref('app')]);
    const before = (await storeStatus(store.dir, (ls) => ls.filter((l) => l.ref === ref('app') && l.uses > 0).length === 2, 'both layers of the pulled image in use')).filter((l) => l.ref === ref('app'));
    assert.deepEqual(before.map((l) => l.key).sort(), app.layers.map((d) => d.digest).sort(), 'both layers come from the store');
    assert.ok(before.every((l) => l.uses >= 1 && l.state === 'served'), `uses after the pull: ${JSON.stringify(before)}`);

    const python = [`/host${LOADER}`, '--library-path', `/host${dirname(LOADER!)}`, '/host/usr/bin/python3', '/out/probe.py'];
    await podman.ok(['run', '-d', '--name', 'probe', '--net=none', ...RUN_LIMITS, '-v', '/:/host:ro', '-v', `${out}:/out`, '-e', 'PYTHONHOME=/host/usr', ref('app'), ...python]);
    const started = await roundsAfter(0);
    assert.deepEqual(results(started.at(-1)!), allOk, 'everything works while the store runs');

    store.child.kill('SIGKILL');
    await store.exited;
    const killedAt = Date.now() / 1000;
    const down = results((await roundsAfter(killedAt + 0.5)).at(-1)!);
    process.stdout.write(`# while the store is down, the container sees: ${JSON.stringify(down)}\n`);
    // Whatever reaches the store fails with ENOTCONN; never EIO or ESTALE.
    for (const op of ['stat_new', 'read_new', 'read_old', 'pread_held_new', 'exec_image_cat']) assert.equal(down[op], 'ENOTCONN', `${op} while the store is down`);
    // Answered from the kernel's caches (attributes of a path looked up before, pages already read through an fd opened before, a
    // directory listed before: the own FUSE session lets the kernel keep listings) unless evicted.
    for (const op of ['stat_old', 'pread_held_old', 'listdir']) assert.ok(['ok', 'ENOTCONN'].includes(down[op]!), `${op} while the store is down: ${down[op]}`);
    const execDown = await podman.run(['exec', 'probe', '/bin/cat', '/data/f0000']);
    assert.notEqual(execDown.code, 0);
    assert.match(execDown.stderr, /transport endpoint is not connected/);
    const runDown = await podman.run(['run', '--rm', '--net=none', ...RUN_LIMITS, ref('app'), '/bin/cat', '/data/f0001']);
    assert.notEqual(runDown.code, 0, 'a new container cannot start while the store is down');
    assert.match(runDown.stderr, /creating overlay mount .*transport endpoint is not connected/);

    store = await startTheStore();
    assert.ok(store.log.some((l) => l.includes('stale mount')), 'the restarted store cleared the stale mount');
    // Before anything is looked up again: the counts from before the kill.
    const remembered = (await storeStatus(store.dir)).filter((l) => l.ref === ref('app'));
    assert.deepEqual(remembered.map((l) => [l.key, l.uses, l.state]).sort(), before.map((l) => [l.key, l.uses, 'remembered']).sort(), 'the restarted store knows the counts before any lookup');
    assert.deepEqual(remembered.map((l) => [l.digest, l.format]).sort(), app.layers.map((d) => [d.digest, 'zstd:chunked']).sort());
    const table = await runCli(['store', 'status', store.dir]);
    assert.match(table.stdout.toString(), /FETCHED -: counted before the store restarted, not looked up since/);

    const restartedAt = Date.now() / 1000;
    await sleep(3000);
    const stillDown = results((await roundsAfter(restartedAt + 2.5)).at(-1)!);
    assert.deepEqual(stillDown, down, 'the running container does not recover by itself: its overlay holds the dead connection');
    const execAfter = await podman.run(['exec', 'probe', '/bin/cat', '/data/f0000']);
    assert.match(execAfter.stderr, /transport endpoint is not connected/, 'podman exec into it fails too');

    // stop cleans up the container's root filesystem (its overlay over the dead connection);
    // start mounts a new one over the restarted store. (`podman restart` may reuse the old
    // mount.) The probe is PID 1 and ignores SIGTERM: -t 0 kills it at once.
    await podman.ok(['stop', '-t', '0', 'probe']);
    const startedAgain = Date.now() / 1000;
    await podman.ok(['start', 'probe']);
    const back = results((await roundsAfter(startedAgain + 0.5)).at(-1)!);
    assert.deepEqual(back, allOk, 'after podman stop + start the container reads everything again');
  });

  it('after kill -9 and a restart, podman pull and podman run work, and podman rmi releases counts from before the kill', async () => {
    store.child.kill('SIGKILL');
    await store.exited;
    store = await startTheStore();
    assert.equal(await isFuseMounted(store.dir), true);

    await podman.ok(['pull', '--tls-verify=false', ref('other')]);
    assert.ok((await podman.storeLayers()).some((l) => l.endsWith(other.layers[0]!.digest)), 'the new image\'s layer comes from the store');
    assert.equal((await podman.exec(ref('other'), '/usr/bin/cat', '/etc/motd')).toString(), 'pulled after the restart\n');
    assert.deepEqual(await podman.exec(ref('app'), '/usr/bin/cat', '/data/f0042'), seededBytes('f42', 4096), 'a new container of the image pulled before the kill reads its files');
    assert.deepEqual(await podman.ok(['run', '--rm', '--net=none', ...RUN_LIMITS, ref('app'), '/bin/cat', '/data/f0007']), seededBytes('f7', 4096), 'and runs its own programs');

    await podman.ok(['rm', '-f', '-t', '0', 'probe']);
    await podman.ok(['rmi', ref('app')]);
    const layers = await storeStatus(store.dir, (ls) => ls.every((l) => l.ref !== ref('app') || l.uses === 0), 'the layers counted before the kill released by podman rmi (0 uses)');
    assert.ok(layers.some((l) => l.ref === ref('other') && l.uses >= 1), 'the image pulled after the restart is still in use');

    // And the releases are durable: after one more kill -9, the store starts with the same counts.
    const inUse = (ls: StatusLayer[]): unknown[] => ls.filter((l) => l.uses > 0).map((l) => [l.ref, l.key, l.uses]).sort();
    const counts = inUse(layers);
    store.child.kill('SIGKILL');
    await store.exited;
    store = await startTheStore();
    assert.deepEqual(inUse(await storeStatus(store.dir)), counts);
    assert.ok(!(await storeStatus(store.dir)).some((l) => l.ref === ref('app')), 'layers released to 0 are not remembered');
  });
});

describe('tocfs store --takeover (own FUSE session): a running container never notices, with Podman 4.3.1', { skip: skip || sessionSkip, timeout: 300_000 }, () => {
  const SESSION = { TOCFS_DAEMON_FUSE_SESSION: 'tocfs' };
  let work: string;
  let registry: TestRegistry;
  let store: RunningStore;
  let podman: Podman;
  let app: BuiltImage;
  let out: string;
  const ref = `app:latest`;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-store-takeover-'));
    app = await buildProbeImage(work);
    registry = await startRegistry();
    await registry.load(app.dir, 'app');
    store = await startStore(join(work, 'store'), join(work, 'cache'), [], SESSION);
    podman = await Podman.create(work, store.dir, registry.host);
    out = await probeDir(work);
  });

  after(() => tearDown({ podman, store, work, registry }));

  const probeLines = (): Promise<ProbeLine[]> => probeLinesIn(out);

  it('two takeovers while the probe reads, stats, lists and execs from the store: every round succeeds, and the successor serves new containers and releases', async () => {
    const image = `${registry.host}/${ref}`;
    await podman.ok(['pull', '--tls-verify=false', image]);
    assert.ok(store.log.some((l) => l.includes('FUSE session initialised')) && !store.log.some((l) => l.includes('session is unavailable')), 'the store serves through its own FUSE session');
    const python = [`/host${LOADER}`, '--library-path', `/host${dirname(LOADER!)}`, '/host/usr/bin/python3', '/out/probe.py'];
    await podman.ok(['run', '-d', '--name', 'probe', '--net=none', ...RUN_LIMITS, '-v', '/:/host:ro', '-v', `${out}:/out`, '-e', 'PYTHONHOME=/host/usr', image, ...python]);
    const roundsSince = async (t: number, n: number): Promise<ProbeLine[]> => {
      for (let i = 0; i < 300; i++) {
        const lines = (await probeLines()).filter((l) => l.t > t);
        if (lines.length >= n) return lines;
        await sleep(100);
      }
      throw new Error(`the probe wrote fewer than ${n} rounds after ${t}`);
    };
    await roundsSince(0, 2);

    for (let round = 1; round <= 2; round++) {
      const predecessor = store;
      const successor = await startStore(predecessor.dir, join(work, 'cache'), ['--takeover'], SESSION);
      assert.equal(await predecessor.exited, 0, `the predecessor exits cleanly after handing over (takeover ${round})`);
      assert.ok(predecessor.log.some((l) => l.includes('handed the FUSE session over')), 'the predecessor says it handed over');
      assert.equal(await isFuseMounted(successor.dir), true, 'the store stays mounted');
      store = successor;
      await roundsSince(Date.now() / 1000, 4);
    }

    const lines = await probeLines();
    const failed = lines.filter((l) => OPERATIONS.some((o) => l[o] !== 'ok'));
    process.stdout.write(`# ${lines.length} probe rounds across two takeovers, ${failed.length} with an error\n`);
    assert.deepEqual(failed, [], 'no probe round saw an error across the takeovers');

    // The successor serves everything a store does: a new container, exec into the running one, and releases.
    assert.deepEqual(await podman.ok(['run', '--rm', '--net=none', ...RUN_LIMITS, image, '/bin/cat', '/data/f0007']), seededBytes('f7', 4096));
    assert.deepEqual(Buffer.from(await podman.ok(['exec', 'probe', '/bin/cat', '/data/f0042'])), seededBytes('f42', 4096));
    await podman.ok(['rm', '-f', '-t', '0', 'probe']);
    await podman.ok(['rmi', image]);
    await storeStatus(store.dir, (ls) => ls.every((l) => l.ref !== image || l.uses === 0), 'the layers released by podman rmi after the takeovers');
  });
});
