/**
 * The functions that dominate one or more `node --cpu-prof` profiles: self time per function
 * (file:line), summed over the given .cpuprofile files.
 *
 *   node --import tsx scripts/bench/cpuprofile-top.ts DIR_OR_FILES... [--top N]
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const topIdx = args.indexOf('--top');
const top = topIdx >= 0 ? Number(args.splice(topIdx, 2)[1]) : 25;
const files: string[] = [];
for (const a of args) {
  if ((await stat(a)).isDirectory()) files.push(...(await readdir(a)).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(a, f)));
  else files.push(a);
}
const self = new Map<string, number>();
let total = 0;
for (const f of files) {
  const p = JSON.parse(await readFile(f, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  p.samples.forEach((id, i) => {
    const n = byId.get(id)!;
    const url = n.callFrame.url.replace(/^file:\/\//, '').replace(/.*\/(node_modules|dist|src)\//, '$1/');
    const key = `${n.callFrame.functionName || '(anonymous)'} ${url}:${n.callFrame.lineNumber + 1}`;
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  });
}
console.log(`${files.length} profile(s), ${total.toFixed(0)} ms sampled`);
for (const [k, ms] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`${ms.toFixed(0).padStart(8)} ms ${((ms / total) * 100).toFixed(1).padStart(5)} %  ${k}`);
}
