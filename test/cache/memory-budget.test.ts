/**
 * daemon.memory: the memory tier gives way as the rest of the process grows, never below its
 * floor nor above cache.memory_size, and says when the rest alone is over the budget.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ChunkCache } from '../../src/cache/chunk-cache.js';
import { budgetHeadroom, MIN_TIER_BYTES, ProcessMemoryBudget } from '../../src/cache/memory-budget.js';
import { sha256 } from '../../src/digest.js';
import { withinBudget } from '../../src/layer/open.js';
import { captureLogger } from '../helpers/log-capture.js';

const MiB = 1024 ** 2;
let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-memory-budget-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('the tier limit is the budget less the headroom and whatever else the process holds, within [floor, cache.memory_size]', () => {
  const budget = 256 * MiB;
  let held = 0;
  let limit = -1;
  const tier = { get bytes() { return held; }, limit: (b: number) => void (limit = b) };
  let rss = 60 * MiB;
  const { logger, records } = captureLogger();
  const warned = (): string[] => records.filter((r) => r.level >= 40).map((r) => r.msg);
  const gov = new ProcessMemoryBudget(budget, tier, 128 * MiB, logger, () => rss);
  try {
    assert.equal(limit, 128 * MiB, 'with room to spare the tier keeps its own cap');
    held = 60 * MiB;
    rss = 200 * MiB; // 140 MiB besides the tier
    assert.equal(gov.adjust(), budget - budgetHeadroom(budget) - 140 * MiB, 'the tier gets what the rest leaves');
    assert.equal(limit, budget - budgetHeadroom(budget) - 140 * MiB);
    assert.deepEqual(warned(), []);
    held = 10 * MiB;
    rss = 300 * MiB; // the rest alone is over the budget
    assert.equal(gov.adjust(), MIN_TIER_BYTES, 'never below the floor');
    assert.equal(warned().length, 1, 'one warning');
    assert.match(warned()[0]!, /more than daemon\.memory \(256M\) allows.*Raise daemon\.memory/);
    gov.adjust();
    assert.equal(warned().length, 1, 'the warning does not repeat at every sample');
  } finally {
    gov.stop();
  }
});

test('a chunk cache under a budget evicts its least recently used chunks to the limit, and serves the rest', async () => {
  const cache = await ChunkCache.open({ dir: join(tmp, 'cache'), memoryBytes: 64 * MiB });
  const chunks = Array.from({ length: 8 }, () => randomBytes(MiB)).map((data) => ({ data, digest: sha256(data) }));
  for (const c of chunks) await cache.put(c.digest, c.data);
  assert.equal(cache.memoryUse.tierBytes, 8 * MiB);
  cache.peek(chunks[0]!.digest); // recently used: kept
  cache.limitMemory(3 * MiB);
  assert.equal(cache.memoryUse.tierBytes, 3 * MiB);
  assert.ok(cache.inMemory(chunks[0]!.digest), 'the most recently used chunk stays');
  assert.ok(cache.inMemory(chunks[7]!.digest) && cache.inMemory(chunks[6]!.digest));
  assert.ok(!cache.inMemory(chunks[1]!.digest), 'the least recently used went');
  assert.ok((await cache.get(chunks[1]!.digest))?.equals(chunks[1]!.data), 'an evicted chunk comes back from disk');
  assert.equal(cache.memoryUse.tierBytes, 3 * MiB, 'and the tier stays within the limit');
  cache.limitMemory(1024 * MiB);
  assert.equal(cache.memoryUse.tierLimitBytes, 64 * MiB, 'a limit never raises the tier above cache.memory_size');
  await cache.flush();
});

test('under a budget, a layer\'s requests in flight are held to a sixteenth of it by their size, never below 1 MiB nor above the setting', () => {
  assert.deepEqual(withinBudget({ readAhead: 5 }, undefined), { readAhead: 5 }, 'no budget: settings as given');
  // 224 MiB / 16 / 8 requests = 1.75 MiB a request.
  assert.equal(withinBudget({}, 224 * MiB).maxRequestBytes, 1.75 * MiB);
  assert.equal(withinBudget({ maxInFlight: 2 }, 224 * MiB).maxRequestBytes, 7 * MiB);
  assert.equal(withinBudget({}, 2048 * MiB).maxRequestBytes, 8 * MiB, 'the default budget leaves the 8M default');
  assert.equal(withinBudget({ maxRequestBytes: 512 * 1024 }, 2048 * MiB).maxRequestBytes, 512 * 1024, 'a smaller setting stands');
  assert.equal(withinBudget({}, 64 * MiB).maxRequestBytes, MiB, 'never below 1 MiB');
});
