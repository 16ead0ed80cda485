/**
 * Hostile-input fuzzing (issue #7 item 2), the short run: a fixed seed and a few thousand
 * cases over real corpus and writer-made inputs (see test/helpers/fuzz.ts for the mutations
 * and the oracle). Every case must end in a consistent result or a clear TocfsError; any
 * other outcome fails with the case number, which `scripts/fuzz --seed S --case I` replays.
 * Long runs: scripts/fuzz --minutes M.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loadSeeds, measuredCase, newStats, summary, type Seeds } from './helpers/fuzz.js';

const SEED = Number(process.env.TOCFS_FUZZ_SEED ?? 20261201);
const CASES = Number(process.env.TOCFS_FUZZ_CASES ?? 3000);

describe('fuzz: hostile inputs to every parser', () => {
  let seeds: Seeds;
  before(async () => {
    seeds = await loadSeeds();
  });
  after(async () => {
    await seeds?.cleanup();
  });

  it('the seeds are real inputs: corpus and writer layers of both framings, manifests, indexes, configs, plain layers', () => {
    assert.ok(seeds.layers.some((s) => s.kind === 'zstd') && seeds.layers.some((s) => s.kind === 'gzip'), 'zstd and gzip TOC layers');
    assert.ok(seeds.layers.some((s) => s.origin.startsWith('writer')), 'layers from the project writer');
    assert.ok(seeds.plain.length > 0, 'plain layers');
    for (const kind of ['index', 'manifest', 'config'] as const) assert.ok(seeds.docs.some((d) => d.kind === kind), kind);
  });

  it(`seed ${SEED}: ${CASES} mutated inputs each end in a consistent result or a clear error`, { timeout: 10 * 60_000 }, async () => {
    const stats = newStats();
    for (let i = 0; i < CASES; i++) await measuredCase(seeds, SEED, i, stats);
    console.log(`# fuzz: ${stats.cases} cases, ${stats.errors} clear errors, worst ${stats.worstMs.toFixed(0)} ms, peak RSS ${stats.peakRssMb.toFixed(0)} MB`);
    console.log(`# fuzz: ${summary(stats)}`);
    console.log(`# fuzz: by target ${JSON.stringify(stats.byTarget)}`);
    assert.deepEqual(stats.failures.slice(0, 5), [], `${stats.failures.length} failing cases (replay with scripts/fuzz --seed ${SEED} --case N)`);
    // Every target ran, and the mutations reach past the first checks: some inputs are
    // accepted (and checked for consistency), many are refused for different reasons.
    for (const t of ['readLayerToc', 'extractChunk', 'parseManifestDocument', 'parseConfig', 'indexPlainLayer', 'probeLayer', 'tocStore', 'decodePlainIndex']) assert.ok(stats.byTarget[t], `target ${t} ran`);
    assert.ok(stats.ok > CASES / 20, `${stats.ok} consistent successes`);
    assert.ok(stats.errorKinds.size > 40, `${stats.errorKinds.size} distinct kinds of error`);
  });
});
