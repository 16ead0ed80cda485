import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { WriterThread } from '../../src/cache/writer-thread.js';

test('the writer thread writes every chunk whole, in directories it makes, through many turns', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tocfs-writer-'));
  const writer = new WriterThread();
  try {
    const tmp = join(dir, 'tmp');
    await import('node:fs/promises').then((fs) => fs.mkdir(tmp));
    const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 * 1024 + i, i));
    // Several batches: the worker collects the moved buffers after each turn and goes on writing.
    for (let batch = 0; batch < 4; batch++) {
      await Promise.all(chunks.slice(batch * 16, batch * 16 + 16).map((c, j) => writer.write(tmp, join(dir, 'sub', String(batch), `c${j}`), c, 1_000_000)));
    }
    for (let batch = 0; batch < 4; batch++) {
      for (let j = 0; j < 16; j++) {
        const path = join(dir, 'sub', String(batch), `c${j}`);
        assert.deepEqual(await readFile(path), chunks[batch * 16 + j]);
        assert.equal((await stat(path)).mtimeMs, 1_000_000_000);
      }
    }
    // A view into a larger buffer writes just its bytes.
    const big = Buffer.alloc(1 << 20, 7);
    await writer.write(tmp, join(dir, 'view'), big.subarray(10, 20));
    assert.deepEqual(await readFile(join(dir, 'view')), Buffer.alloc(10, 7));
    assert.equal(big.length, 1 << 20, 'the caller keeps its buffer');
  } finally {
    await writer.close();
    await rm(dir, { recursive: true, force: true });
  }
});
