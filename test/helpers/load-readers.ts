/**
 * Concurrent readers for the load test, run as a child process so it can have a libuv
 * thread pool as large as its reader count (UV_THREADPOOL_SIZE must be set before the
 * process starts; with node's default of 4, 64 readers would be 4 at a time).
 *
 *   node --import tsx test/helpers/load-readers.ts < spec.json  → summary JSON on stdout
 *
 * Every file is `seededContent(seed, size)` (images.ts), so each read's expected bytes are
 * computed for exactly its range and every byte read is checked.
 */
import { createCipheriv, createHash, randomInt } from 'node:crypto';
import { open } from 'node:fs/promises';
import { text } from 'node:stream/consumers';

export interface LoadSpec {
  files: Array<{ path: string; seed: string; size: number }>;
  readers: number;
  durationMs: number;
  /** Largest single read. */
  maxRead: number;
}

export interface LoadResult {
  reads: number;
  bytes: number;
  /** Reads whose bytes differed from the expected ones (must be none). */
  wrong: string[];
  /** Reads that failed (must be none: no faults are injected). */
  errors: string[];
  worstMs: number;
}

/** Bytes [offset, offset+length) of `seededContent(seed, …)`: the AES-256-CTR keystream from block offset/16. */
export function seededSlice(seed: string, offset: number, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(Math.floor(offset / 16)), 8);
  const skip = offset % 16;
  return createCipheriv('aes-256-ctr', key, iv).update(Buffer.alloc(skip + length)).subarray(skip);
}

async function reader(spec: LoadSpec, until: number, out: LoadResult): Promise<void> {
  while (Date.now() < until) {
    const f = spec.files[randomInt(spec.files.length)]!;
    // Small files whole, big ones by random ranges.
    const offset = f.size <= spec.maxRead ? 0 : randomInt(f.size);
    const length = f.size <= spec.maxRead ? f.size : Math.min(f.size - offset, randomInt(1, spec.maxRead + 1));
    const started = Date.now();
    try {
      const fh = await open(f.path);
      try {
        const buf = Buffer.alloc(length);
        let got = 0;
        while (got < length) {
          const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        out.reads++;
        out.bytes += got;
        if (got !== length || !buf.equals(seededSlice(f.seed, offset, length))) out.wrong.push(`${f.path} [${offset}, +${length}): ${got} bytes read, content ${got === length ? 'differs' : 'short'}`);
      } finally {
        await fh.close();
      }
    } catch (e) {
      out.errors.push(`${f.path} [${offset}, +${length}): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    out.worstMs = Math.max(out.worstMs, Date.now() - started);
  }
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const out: LoadResult = { reads: 0, bytes: 0, wrong: [], errors: [], worstMs: 0 };
  const until = Date.now() + spec.durationMs;
  await Promise.all(Array.from({ length: spec.readers }, () => reader(spec, until, out)));
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const spec = JSON.parse(await text(process.stdin)) as LoadSpec;
  process.stdout.write(`${JSON.stringify(await runLoad(spec))}\n`);
}
