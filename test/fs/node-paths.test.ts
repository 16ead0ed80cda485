/** NodePaths (fs/session/node-paths.ts) behaves as a Map from node id to path, whatever the ids. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { NodePaths } from '../../src/fs/session/node-paths.js';

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s / 2 ** 32;
  };
}

it('node paths agree with a Map under random sets and deletes, for dense, high, synthetic and scattered ids', () => {
  const rnd = prng(11);
  const bases = [0, 3 * 2 ** 32, 2 ** 52, 2 ** 53 - 10_000];
  const table = new NodePaths();
  const want = new Map<number, string>();
  for (let op = 0; op < 50_000; op++) {
    const base = bases[Math.floor(rnd() * bases.length)]!;
    // Mostly runs of nearby ids, sometimes one far away.
    const id = base + (rnd() < 0.9 ? Math.floor(rnd() * 9000) : Math.floor(rnd() * 2 ** 30));
    if (id > Number.MAX_SAFE_INTEGER) continue;
    if (rnd() < 0.7) {
      const path = `/p${op}`;
      table.set(id, path);
      want.set(id, path);
    } else {
      table.delete(id);
      want.delete(id);
    }
    if (op % 997 === 0) {
      assert.equal(table.get(id), want.get(id));
      assert.equal(table.has(id), want.has(id));
    }
  }
  const got = [...table].sort((a, b) => a[0] - b[0]);
  assert.deepEqual(got, [...want].sort((a, b) => a[0] - b[0]));
  for (const [id, path] of want) assert.equal(table.get(id), path);
  for (const id of want.keys()) table.delete(id);
  assert.deepEqual([...table], []);
  assert.equal(table.get(1), undefined);
  table.delete(12345); // deleting what is not there is nothing
});
