/**
 * `find`-like walk of a tree (readdir + lstat of every entry), timed inside the process so
 * start-up does not count: prints the entries, the milliseconds of each of `passes` walks, and
 * of one more pass that only lstat()s the paths found (no readdir).
 *
 *   node --import tsx scripts/bench/stat-tree.ts DIR [PASSES]
 */
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const [dir, passesArg] = process.argv.slice(2);
if (!dir) {
  console.error('usage: stat-tree.ts DIR [PASSES]');
  process.exit(2);
}
const paths: string[] = [];
function walk(d: string): number {
  let n = 0;
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    lstatSync(p);
    paths.push(p);
    n++;
    if (e.isDirectory()) n += walk(p);
  }
  return n;
}
const ms: number[] = [];
let entries = 0;
for (let i = 0; i < Number(passesArg ?? 2); i++) {
  const t0 = performance.now();
  paths.length = 0;
  entries = walk(dir);
  ms.push(performance.now() - t0);
}
const t1 = performance.now();
for (const p of paths) lstatSync(p);
console.log(JSON.stringify({ entries, ms, stat_only_ms: performance.now() - t1 }));
