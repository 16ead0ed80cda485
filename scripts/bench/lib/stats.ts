/** Repetition summaries: median and range of the samples of one measurement. */

export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
  samples: number[];
}

export function summarize(samples: number[]): Summary {
  if (!samples.length) throw new Error('no samples');
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length, samples };
}

/** Runs `once` `reps` times and summarises each named number it returns. */
export async function repeat(reps: number, once: (i: number) => Promise<Record<string, number>>): Promise<Record<string, Summary>> {
  const runs: Array<Record<string, number>> = [];
  for (let i = 0; i < reps; i++) runs.push(await once(i));
  const out: Record<string, Summary> = {};
  for (const k of Object.keys(runs[0]!)) out[k] = summarize(runs.map((r) => r[k]!));
  return out;
}

/** a / b rounded to 2 decimals, or null if either side is missing. */
export function ratio(a: number | undefined | null, b: number | undefined | null): number | null {
  if (a == null || b == null || b === 0) return null;
  return Math.round((a / b) * 100) / 100;
}
