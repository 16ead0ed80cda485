/**
 * Atomic chunk writes (files.ts's writeAtomic, the same temp names and modes) done with
 * synchronous calls on a worker thread of their own. A cold read writes every chunk it
 * fetches; on the main thread each write is five file operations whose dispatch and
 * completion cost more main-thread time than hashing the chunk, and on libuv's four-thread
 * pool they queue in front of the decompression that reads wait for.
 *
 * The bytes of each write are moved to the worker, whose heap allocates almost nothing else:
 * left to itself its garbage collector would not run until some 64 MB of written chunks had
 * piled up (V8 collects for outside memory only then), which a store serving one container
 * start kept resident. The worker runs a young-generation collection (a fraction of a
 * millisecond on its tiny heap, off the main thread) once the writes of a turn are done.
 */
import { Worker } from 'node:worker_threads';
import { DIR_MODE, FILE_MODE, tempPathFor } from './files.js';

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const { dirname } = require('node:path');
let collect;
try {
  require('node:v8').setFlagsFromString('--expose-gc');
  collect = require('node:vm').runInNewContext('gc');
} catch {}
let release = false;
parentPort.on('message', ({ id, tmp, path, data, mtimeSec, dirMode, fileMode }) => {
  if (collect && !release) {
    release = true;
    setImmediate(() => {
      release = false;
      collect({ type: 'minor' });
    });
  }
  try {
    try {
      fs.writeFileSync(tmp, data, { mode: fileMode, flag: 'wx' });
      if (mtimeSec !== undefined) fs.utimesSync(tmp, mtimeSec, mtimeSec);
      try {
        fs.renameSync(tmp, path);
      } catch (e) {
        if (e.code !== 'ENOENT') throw e;
        fs.mkdirSync(dirname(path), { recursive: true, mode: dirMode });
        fs.renameSync(tmp, path);
      }
    } catch (e) {
      try { fs.unlinkSync(tmp); } catch {}
      throw e;
    }
    parentPort.postMessage({ id });
  } catch (e) {
    parentPort.postMessage({ id, error: { message: String(e && e.message), code: e && e.code } });
  }
});
`;

interface Reply {
  id: number;
  error?: { message: string; code?: string };
}

export class WriterThread {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(): void; reject(e: Error): void }>();

  private start(): Worker {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    worker.on('message', (r: Reply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) worker.unref();
      if (r.error) p.reject(Object.assign(new Error(r.error.message), r.error.code ? { code: r.error.code } : {}));
      else p.resolve();
    });
    const fail = (e: Error): void => {
      this.worker = undefined;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the cache's writer thread exited (code ${code})`)));
    worker.unref();
    return worker;
  }

  /** Writes `data` to `path` via a temp file in `tmpDir` (same filesystem), as writeAtomic does. */
  write(tmpDir: string, path: string, data: Uint8Array, mtimeSec?: number): Promise<void> {
    this.worker ??= this.start();
    const worker = this.worker;
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // Kept alive while writes are pending: a daemon flushing at exit waits for them.
      worker.ref();
      // A copy of just these bytes, moved rather than cloned: cloning a view copies its whole
      // backing store (a chunk may sit in a much larger decompressed buffer).
      const own = new Uint8Array(data);
      worker.postMessage({ id, tmp: tempPathFor(tmpDir, path), path, data: own, mtimeSec, dirMode: DIR_MODE, fileMode: FILE_MODE }, [own.buffer]);
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }
}
