/**
 * Long fuzz runs (scripts/fuzz): the mutation engine and oracle of test/helpers/fuzz.ts for
 * as many cases or minutes as asked. Cases run in a worker thread so that a case that hangs
 * (even in a synchronous loop) is caught by the main thread, recorded and skipped. Every
 * failing input is written to --out for reproduction; `--case I` replays one case verbosely.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { parseArgs } from 'node:util';
import { loadSeeds, measuredCase, newStats, runCase, summary, type CaseInput, type RunStats } from '../test/helpers/fuzz.js';

interface Job {
  seed: number;
  from: number;
  until: number;
  deadline: number;
  out: string;
}

type Msg =
  | { kind: 'ready' }
  | { kind: 'start'; index: number }
  | { kind: 'stats'; stats: RunStats & { errorKinds: Array<[string, number]> } }
  | { kind: 'done'; next: number };

async function writeFailure(out: string, seed: number, index: number, input: CaseInput, message: string): Promise<string> {
  const dir = join(out, `seed-${seed}-case-${index}`);
  await mkdir(dir, { recursive: true });
  for (const [name, data] of Object.entries(input.files)) await writeFile(join(dir, name), data);
  await writeFile(join(dir, 'failure.txt'), `${message}\n\nreplay: scripts/fuzz --seed ${seed} --case ${index}\n`);
  return dir;
}

async function worker(job: Job): Promise<void> {
  const post = (m: Msg): void => parentPort!.postMessage(m);
  const seeds = await loadSeeds();
  post({ kind: 'ready' });
  const stats = newStats();
  let i = job.from;
  const report = (): void => post({ kind: 'stats', stats: { ...stats, errorKinds: [...stats.errorKinds] } as unknown as RunStats & { errorKinds: Array<[string, number]> } });
  for (; i < job.until && Date.now() < job.deadline; i++) {
    post({ kind: 'start', index: i });
    await measuredCase(seeds, job.seed, i, stats, async (index, input, message) => {
      const dir = await writeFailure(job.out, job.seed, index, input, message);
      console.error(`FAIL case ${index}: ${message.split('\n')[0]!.slice(0, 300)}\n  input written to ${dir}`);
    });
    // After every case: a hang in the next one must not lose what came before.
    report();
  }
  report();
  await seeds.cleanup();
  post({ kind: 'done', next: i });
}

function merge(into: RunStats, s: RunStats & { errorKinds: Array<[string, number]> }): void {
  into.cases += s.cases;
  into.ok += s.ok;
  into.errors += s.errors;
  into.failures.push(...s.failures);
  for (const [t, v] of Object.entries(s.byTarget)) {
    const e = (into.byTarget[t] ??= { ok: 0, error: 0 });
    e.ok += v.ok;
    e.error += v.error;
  }
  for (const [t, v] of Object.entries(s.msByTarget)) into.msByTarget[t] = (into.msByTarget[t] ?? 0) + v;
  if (s.worstMs > into.worstMs) Object.assign(into, { worstMs: s.worstMs, worstCase: s.worstCase, worstTarget: s.worstTarget });
  into.worstRssGrowthMb = Math.max(into.worstRssGrowthMb, s.worstRssGrowthMb);
  into.peakRssMb = Math.max(into.peakRssMb, s.peakRssMb);
  for (const [k, v] of s.errorKinds) into.errorKinds.set(k, (into.errorKinds.get(k) ?? 0) + v);
}

/** A worker running this file (tsx hooks are per thread: the worker registers them itself). */
function startWorker(job: Job): Worker {
  const api = import.meta.resolve('tsx/esm/api');
  const code = `(async () => { const { register } = await import(${JSON.stringify(api)}); register(); await import(${JSON.stringify(import.meta.url)}); })()`;
  return new Worker(code, { eval: true, workerData: job });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      cases: { type: 'string' },
      minutes: { type: 'string' },
      case: { type: 'string' },
      out: { type: 'string', default: 'fuzz-failures' },
      'hang-seconds': { type: 'string', default: '60' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(`usage: scripts/fuzz [--seed N] [--cases N | --minutes M] [--out DIR] [--hang-seconds S]
       scripts/fuzz --seed N --case I     replay one case and print its outcome

Mutates real footers, TOCs, annotations, chunk frames, manifests, indexes, configs and plain
layers (corpus + the project's writers) and checks every outcome: a consistent result or a
clear TocfsError. Failing inputs go to DIR/seed-N-case-I/ (default ./fuzz-failures).`);
    return;
  }
  const seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 1_000_000_007;
  const out = resolve(values.out!);
  if (values.case !== undefined) {
    const index = Number(values.case);
    const seeds = await loadSeeds();
    const input: CaseInput = { files: {} };
    try {
      const outcome = await runCase(seeds, seed, index, input);
      console.log(JSON.stringify(outcome, null, 1));
    } catch (e) {
      console.log(`FAIL: ${(e as Error).message}`);
      console.log(`input written to ${await writeFailure(out, seed, index, input, (e as Error).message)}`);
      process.exitCode = 1;
    } finally {
      await seeds.cleanup();
    }
    return;
  }
  const minutes = values.minutes !== undefined ? Number(values.minutes) : undefined;
  const cases = values.cases !== undefined ? Number(values.cases) : minutes === undefined ? 10_000 : Number.MAX_SAFE_INTEGER;
  const deadline = minutes === undefined ? Number.MAX_SAFE_INTEGER : Date.now() + minutes * 60_000;
  const hangMs = Number(values['hang-seconds']) * 1000;
  console.log(`fuzz: seed ${seed}, ${minutes !== undefined ? `${minutes} minutes` : `${cases} cases`}, failures to ${out}`);
  const total = newStats();
  const hangs: number[] = [];
  const started = Date.now();
  let next = 0;
  while (next < cases && Date.now() < deadline) {
    const job: Job = { seed, from: next, until: cases, deadline, out };
    let current = next;
    let since = Date.now();
    let ready = false;
    let last: (RunStats & { errorKinds: Array<[string, number]> }) | undefined;
    const w = startWorker(job);
    const result = await new Promise<{ next: number; hung: boolean }>((done, fail) => {
      const watch = setInterval(() => {
        if (ready && Date.now() - since > hangMs) {
          clearInterval(watch);
          void w.terminate();
          done({ next: current + 1, hung: true });
        }
      }, 1000);
      let lastPrint = Date.now();
      w.on('message', (m: Msg) => {
        if (m.kind === 'ready') {
          ready = true;
          since = Date.now();
        } else if (m.kind === 'start') {
          current = m.index;
          since = Date.now();
        } else if (m.kind === 'stats') {
          last = m.stats;
          if (Date.now() - lastPrint > 30_000) {
            lastPrint = Date.now();
            console.log(`  ${((Date.now() - started) / 60_000).toFixed(1)} min: ${total.cases + m.stats.cases} cases, ${total.failures.length + m.stats.failures.length} failures`);
          }
        } else if (m.kind === 'done') {
          clearInterval(watch);
          done({ next: m.next, hung: false });
        }
      });
      w.on('error', (e) => {
        clearInterval(watch);
        fail(e);
      });
    });
    if (last) merge(total, last);
    if (result.hung) {
      hangs.push(current);
      total.failures.push({ index: current, message: `no outcome within ${hangMs / 1000} s (hang)` });
      const dir = join(out, `seed-${seed}-case-${current}`);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'failure.txt'), `hang: no outcome within ${hangMs / 1000} s\n\nreplay: scripts/fuzz --seed ${seed} --case ${current}\n`);
      console.error(`HANG case ${current}: recorded in ${dir}`);
    }
    next = result.next;
  }
  const minutesRun = (Date.now() - started) / 60_000;
  console.log(`\nfuzz: seed ${seed}, ${minutesRun.toFixed(1)} min: ${summary(total)}${hangs.length ? `, hangs at ${hangs.join(', ')}` : ''}`);
  console.log(`by target (ok/error): ${Object.entries(total.byTarget).map(([t, v]) => `${t} ${v.ok}/${v.error}`).join(', ')}`);
  console.log(`time by target (s): ${Object.entries(total.msByTarget).map(([t, v]) => `${t} ${(v / 1000).toFixed(1)}`).join(', ')}`);
  console.log(`${total.errorKinds.size} kinds of clear error; the most frequent:`);
  for (const [k, v] of [...total.errorKinds].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${String(v).padStart(6)}  ${k}`);
  if (total.failures.length) {
    console.log(`\n${total.failures.length} failing cases (inputs in ${out}):`);
    for (const f of total.failures.slice(0, 20)) console.log(`  case ${f.index}: ${f.message.split('\n')[0]!.slice(0, 200)}`);
    process.exitCode = 1;
  }
}

if (isMainThread) await main();
else await worker(workerData as Job);
