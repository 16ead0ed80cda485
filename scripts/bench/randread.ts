/**
 * Random 4 KiB reads of one file, one at a time (each waits for the previous, like a
 * database page read): prints reads per second.
 *
 *   node --import tsx scripts/bench/randread.ts FILE COUNT
 */
import { open } from 'node:fs/promises';

const [file, countArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: randread.ts FILE [COUNT]');
  process.exit(2);
}
const count = Number(countArg ?? 2000);
const fh = await open(file, 'r');
const size = (await fh.stat()).size;
const buf = Buffer.alloc(4096);
// A fixed LCG so every target reads the same offsets.
let x = 12345;
const pages = Math.max(1, Math.floor(size / 4096));
const t0 = performance.now();
for (let i = 0; i < count; i++) {
  x = (x * 1103515245 + 12345) % 2147483648;
  await fh.read(buf, 0, 4096, (x % pages) * 4096);
}
const s = (performance.now() - t0) / 1000;
await fh.close();
console.log(JSON.stringify({ reads: count, seconds: s, reads_per_s: count / s }));
