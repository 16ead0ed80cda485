/**
 * store/use-counts.ts: the layer store's use counts survive a restart, and no crash — a
 * journal cut at any byte, a damaged line, a compaction cut short, `kill -9` of a process
 * writing as fast as it can — loses or corrupts a count that was acknowledged, or any other
 * count. LayerStore over a real registry: a restarted store knows the counts of layers it
 * served before they are looked up again, and shows them in its status.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { LayerOpener } from '../../src/layer/open.js';
import { LayerStore } from '../../src/store/layers.js';
import { journalLine, parseJournal, UseCounts, useJournalFile, type RememberedLayer } from '../../src/store/use-counts.js';
import { buildImage, seededBytes, type BuiltImage } from '../helpers/images.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { isolatedRegistryOptions } from '../helpers/registry-env.js';
import { captureLogger } from '../helpers/log-capture.js';

const WRITER = fileURLToPath(new URL('../helpers/use-journal-writer.ts', import.meta.url));
const REF = 'registry.test/app:latest';
const key = (i: number): string => `sha256:${i.toString(16).padStart(64, '0')}`;
const layer = (i: number): RememberedLayer => ({ digest: key(i), size: 1000 + i, format: 'zstd:chunked', platform: 'linux/amd64' });

/** Counts as a plain object, for deepEqual. */
function countsOf(c: UseCounts): Record<string, number> {
  return Object.fromEntries(c.entries().map((r) => [`${r.ref} ${r.key}`, r.uses]));
}

describe('use counts across restarts', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-use-counts-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  let n = 0;
  const journal = (): string => useJournalFile(join(tmp, `cache-${n++}`), '/var/lib/tocfs/store');
  const open = (file: string, logger = pino({ level: 'silent' })): Promise<UseCounts> => UseCounts.open({ file, storeDir: '/var/lib/tocfs/store', logger });

  it('survive a restart: what was counted is what the next process reads', async () => {
    const file = journal();
    const a = await open(file);
    await a.compact();
    for (const [i, d] of [[1, +1], [1, +1], [2, +1], [1, -1], [3, +1], [3, -1]] as const) await a.change(REF, key(i), d, layer(i)).durable;
    await a.close();
    const b = await open(file);
    assert.deepEqual(countsOf(b), { [`${REF} ${key(1)}`]: 1, [`${REF} ${key(2)}`]: 1 }, 'layer 3 went back to 0 and is gone');
    assert.deepEqual(b.entries().find((r) => r.key === key(2))?.layer, layer(2), 'what status shows of the layer is remembered');
    await b.close();
  });

  it('live in <cache dir>/stores/, private to tocfs (0700 directory, 0600 file), one journal per store directory', async () => {
    const cache = join(tmp, 'cache-modes');
    const file = useJournalFile(cache, '/var/lib/tocfs/store');
    assert.match(file, new RegExp(`^${cache}/stores/[0-9a-f]{16}\\.uses$`));
    assert.notEqual(useJournalFile(cache, '/srv/other-store'), file);
    assert.equal(useJournalFile(cache, '/var/lib/tocfs/store/'), file, 'the same directory however it is spelled');
    const c = await open(file);
    await c.change(REF, key(1), +1).durable;
    await c.close();
    assert.equal((await stat(join(cache, 'stores'))).mode & 0o777, 0o700);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  it('never go below 0; a release of a count already at 0 writes nothing', async () => {
    const file = journal();
    const c = await open(file);
    await c.change(REF, key(1), +1).durable;
    assert.equal(c.change(REF, key(1), -1).uses, 0);
    assert.equal(c.change(REF, key(1), -1).uses, 0);
    assert.equal(c.change(REF, key(9), -1).uses, 0, 'an unknown layer');
    await c.change(REF, key(2), +1).durable;
    await c.close();
    const text = await readFile(file, 'utf8');
    assert.equal(text.trim().split('\n').length, 4, 'header, +1, back to 0, and layer 2: no line for the releases at 0');
    assert.ok(!text.includes('"uses":-'), 'no negative count is ever written');
    // A line claiming a negative count (with a valid checksum: not a torn write) is refused, not clamped.
    await appendFile(file, journalLine({ ref: REF, key: key(2), uses: -1 }));
    const loaded = parseJournal(await readFile(file, 'utf8'), file);
    assert.equal(loaded.damaged, 1);
    assert.equal(loaded.records.get(`${REF}\n${key(2)}`)?.uses, 1);
  });

  it('a journal cut at any byte (a torn append) loses no complete line, and every count is its last complete line', async () => {
    const file = journal();
    const c = await open(file);
    await c.compact();
    const expected: Array<{ end: number; counts: Record<string, number> }> = [];
    const ops = [[1, 1], [2, 1], [1, 1], [3, 1], [2, -1], [1, 1], [4, 1], [3, 1], [1, -1]] as const;
    for (const [i, d] of ops) {
      await c.change(REF, key(i), d, layer(i)).durable;
      expected.push({ end: (await stat(file)).size, counts: countsOf(c) });
    }
    await c.close();
    const full = await readFile(file);
    const header = full.indexOf('\n') + 1;
    for (let cut = header; cut <= full.length; cut++) {
      const loaded = parseJournal(full.subarray(0, cut).toString('utf8'), file);
      const want = [...expected].reverse().find((e) => e.end <= cut)?.counts ?? {};
      const got = Object.fromEntries([...loaded.records.values()].map((r) => [`${r.ref} ${r.key}`, r.uses]));
      assert.deepEqual(got, want, `cut at byte ${cut} of ${full.length}`);
      const torn = !expected.some((e) => e.end === cut) && cut !== header;
      assert.equal(loaded.damaged, torn ? 1 : 0, `cut at byte ${cut}: the torn line is detected`);
    }
  });

  it('a torn tail is reported, skipped, and gone after the next start compacts the journal; the other counts stay', async () => {
    const file = journal();
    const a = await open(file);
    await a.change(REF, key(1), +1, layer(1)).durable;
    await a.change(REF, key(2), +1, layer(2)).durable;
    await a.change(REF, key(2), +1, layer(2)).durable;
    await a.close();
    // What a crash in the middle of an append leaves: part of a line, then nothing.
    const torn = journalLine({ ref: REF, key: key(1), uses: 7 });
    await appendFile(file, torn.slice(0, 40));
    const { logger, records } = captureLogger();
    const b = await open(file, logger);
    assert.deepEqual(countsOf(b), { [`${REF} ${key(1)}`]: 1, [`${REF} ${key(2)}`]: 2 });
    const warning = records.find((r) => r.level === 40);
    assert.match(warning?.msg ?? '', /skipped damaged lines of the use-count journal .*the counts of every other layer are intact/);
    assert.equal(warning?.damaged, 1);
    await b.compact();
    await b.change(REF, key(3), +1).durable;
    await b.close();
    const text = await readFile(file, 'utf8');
    assert.ok(text.endsWith('\n') && !text.includes(torn.slice(0, 40)), 'the torn line is gone, the journal ends with a whole line');
    const c = await open(file);
    assert.deepEqual(countsOf(c), { [`${REF} ${key(1)}`]: 1, [`${REF} ${key(2)}`]: 2, [`${REF} ${key(3)}`]: 1 });
    await c.close();
  });

  it('a damaged line in the middle (bad checksum, garbage, zeros) costs only that line: its layer falls back to its line before', async () => {
    const file = journal();
    const a = await open(file);
    for (const i of [1, 2, 3, 2]) await a.change(REF, key(i), +1).durable;
    await a.close();
    const lines = (await readFile(file, 'utf8')).split('\n');
    // lines: header, 1→1, 2→1, 3→1, 2→2. Flip a digit of the last count of layer 2, and zero out layer 3's line.
    lines[4] = lines[4]!.replace('"uses":2', '"uses":3');
    lines[3] = '\0'.repeat(lines[3]!.length);
    await writeFile(file, lines.join('\n'));
    const b = await open(file);
    assert.deepEqual(countsOf(b), { [`${REF} ${key(1)}`]: 1, [`${REF} ${key(2)}`]: 1 });
    await b.close();
  });

  it('a compaction cut short leaves the journal whole; its temp file is ignored and replaced', async () => {
    const file = journal();
    const a = await open(file);
    await a.change(REF, key(1), +1).durable;
    await a.change(REF, key(2), +1).durable;
    await a.close();
    const before = await readFile(file, 'utf8');
    await writeFile(`${file}.tmp`, before.slice(0, before.length - 30));
    const b = await open(file);
    assert.deepEqual(countsOf(b), { [`${REF} ${key(1)}`]: 1, [`${REF} ${key(2)}`]: 1 });
    await b.compact();
    await b.close();
    await assert.rejects(stat(`${file}.tmp`), { code: 'ENOENT' });
  });

  it('kill -9 of a process writing counts as fast as it can: every acknowledged count is there, nothing else moved', { timeout: 60_000 }, async () => {
    for (const killAfter of [37, 250, 1001]) {
      const file = journal();
      const child = spawn(process.execPath, ['--import', 'tsx', WRITER, file, '5'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const acked = new Map<number, number>();
      let acks = 0;
      const exited = new Promise((r) => child.once('exit', r));
      for await (const line of createInterface({ input: child.stdout! })) {
        const m = /^ack (\d+) (\d+)$/.exec(line);
        if (!m) continue;
        acked.set(Number(m[1]), Number(m[2]));
        if (++acks === killAfter) child.kill('SIGKILL');
      }
      await exited;
      const c = await open(file);
      // The writer waits for each change before the next: at most the one after the last ack may have landed too.
      const next = acks % 5;
      const delta = acks % 7 === 3 ? -3 : 1;
      for (let i = 0; i < 5; i++) {
        const got = c.get('crash.test/app:latest', key(i));
        const was = acked.get(i) ?? 0;
        if (i === next) assert.ok(got === was || got === Math.max(0, was + delta), `layer ${i} after ${acks} acks: ${got}, acknowledged ${was}`);
        else assert.equal(got, was, `layer ${i} after ${acks} acks`);
      }
      await c.close();
    }
  });

  it('the journal is compacted while running once it has grown, and reads the same', async () => {
    const file = journal();
    const c = await open(file);
    for (let i = 0; i < 3000; i++) await c.change(REF, key(i % 3), i % 2 === 0 ? +1 : -1).durable;
    await c.change(REF, key(7), +1).durable;
    await c.close();
    const lines = (await readFile(file, 'utf8')).trim().split('\n').length;
    assert.ok(lines <= 1100, `${lines} lines for 3001 changes`);
    const d = await open(file);
    assert.deepEqual(countsOf(d), countsOf(c));
    await d.close();
  });

  it('a journal from a newer tocfs is refused with what to do', async () => {
    const file = journal();
    const c = await open(file);
    await c.change(REF, key(1), +1).durable;
    await c.close();
    await writeFile(file, journalLine({ journal: 'tocfs-store-uses', version: 2 }) + (await readFile(file, 'utf8')).split('\n').slice(1).join('\n'));
    await assert.rejects(open(file), /written by a newer tocfs .*run that tocfs, or move the file away/);
  });

  it('a journal that cannot be written fails the change with what to do; the count stays in memory and the next change writes every count', async () => {
    const cache = join(tmp, 'cache-unwritable');
    const file = useJournalFile(cache, '/var/lib/tocfs/store');
    const c = await open(file);
    // Its directory is a file: mkdir fails, for root too.
    await mkdir(cache);
    await writeFile(join(cache, 'stores'), '');
    await assert.rejects(c.change(REF, key(1), +1).durable, /cannot write the store's use counts to .*\.uses: .*\(free space or fix the permissions of .*stores; the next change writes every count again\)/);
    assert.equal(c.get(REF, key(1)), 1);
    await rm(join(cache, 'stores'));
    await c.change(REF, key(2), +1).durable;
    await c.close();
    const d = await open(file);
    assert.deepEqual(countsOf(d), { [`${REF} ${key(1)}`]: 1, [`${REF} ${key(2)}`]: 1 });
    await d.close();
  });
});

describe('LayerStore: counts of layers served before a restart', { timeout: 120_000 }, () => {
  let tmp: string;
  let registry: TestRegistry;
  let img: BuiltImage;
  let ref: string;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-store-uses-'));
    img = await buildImage(join(tmp, 'image'), { format: 'zstd:chunked', layers: [[{ path: 'a', content: seededBytes('a', 64 * 1024) }], [{ path: 'b', content: 'b\n' }]] });
    registry = await startRegistry();
    await registry.load(img.dir, 'app');
    ref = `${registry.host}/app:latest`;
  });
  after(async () => {
    await registry?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  const storeOver = async (file: string): Promise<{ store: LayerStore; counts: UseCounts; records: ReturnType<typeof captureLogger>['records'] }> => {
    const { logger, records } = captureLogger();
    const counts = await UseCounts.open({ file, storeDir: join(tmp, 'store'), logger });
    await counts.compact();
    const source = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'env')) };
    const store = new LayerStore({ opener: await LayerOpener.create({ cacheDir: join(tmp, 'cache') }, logger), source, logger, prefetch: 'none', uses: counts });
    return { store, counts, records };
  };

  it('a restarted store knows the counts before any lookup, lists them in its status, and counts releases of them', async () => {
    const file = useJournalFile(join(tmp, 'cache'), join(tmp, 'store'));
    const [l0, l1] = [img.layers[0]!.digest, img.layers[1]!.digest];
    const first = await storeOver(file);
    await first.store.lookup(ref, l0);
    await first.store.lookup(ref, l1);
    await first.store.use(ref, l0);
    await first.store.use(ref, l0);
    await first.store.use(ref, l1);
    await first.store.close();
    await first.counts.close();

    const second = await storeOver(file);
    const status = await second.store.status();
    const row = (k: string) => status.layers.find((l) => l.key === k);
    assert.equal(row(l0)?.uses, 2);
    assert.equal(row(l0)?.state, 'remembered');
    assert.equal(row(l0)?.digest, l0);
    assert.equal(row(l0)?.size, img.layers[0]!.size);
    assert.equal(row(l0)?.format, 'zstd:chunked');
    assert.equal(row(l1)?.uses, 1);

    await second.store.release(ref, l1); // Podman's rmi after the restart, no lookup before it
    await second.store.release(ref, l1);
    assert.equal(second.store.usesOf(ref, l1), 0, 'never below 0');
    assert.equal((await second.store.status()).layers.some((l) => l.key === l1), false, 'a layer back at 0 uses is no longer listed');

    const unknown = key(42);
    await second.store.release(ref, unknown);
    await second.store.use(ref, unknown);
    assert.equal(second.store.usesOf(ref, unknown), 0, 'a layer neither served nor counted before is not counted');
    assert.ok(!(await second.store.status()).layers.some((l) => l.key === unknown));

    await second.store.use(ref, l0); // counted before the restart: counted without a lookup
    assert.equal(second.store.usesOf(ref, l0), 3);
    await second.store.lookup(ref, l0);
    const served = (await second.store.status()).layers.find((l) => l.key === l0);
    assert.equal(served?.state, 'served');
    assert.equal(served?.uses, 3);
    await second.store.close();
    await second.counts.close();

    const third = await storeOver(file);
    assert.deepEqual((await third.store.status()).layers.map((l) => [l.key, l.uses]), [[l0, 3]]);
    await third.store.close();
    await third.counts.close();
  });
});
