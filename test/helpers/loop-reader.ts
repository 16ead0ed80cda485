/**
 * A reader for tests of restarts under load: a Node script that reads every file of `want`
 * (checking its sha256), stats it and lists `data/`, round after round, until its stdin closes,
 * then prints one JSON line (ReaderSummary). Run it as `node -e LOOP_READER(files) DIR WANT_JSON`.
 */

export interface ReaderSummary {
  rounds: number;
  reads: number;
  /** The longest single read + stat: what a restart or hand-over costs a reader. */
  maxStallMs: number;
  errors: string[];
  errorCount: number;
}

/** The script, for a tree whose `data/` directory holds `files` entries. */
export function loopReader(files: number): string {
  return `
const fs = require('node:fs'), crypto = require('node:crypto');
const [dir, want] = [process.argv[1], JSON.parse(process.argv[2])];
let rounds = 0, reads = 0, maxStallMs = 0; const errors = [];
let stop = false; process.stdin.on('end', () => { stop = true; }); process.stdin.resume();
(async function loop() {
  while (!stop) {
    for (const [name, sum] of Object.entries(want)) {
      const t0 = performance.now();
      try {
        const got = crypto.createHash('sha256').update(fs.readFileSync(dir + '/' + name)).digest('hex');
        if (got !== sum) errors.push(name + ': wrong bytes');
        fs.statSync(dir + '/' + name); reads++;
      } catch (e) { errors.push(name + ': ' + e.code); }
      maxStallMs = Math.max(maxStallMs, performance.now() - t0);
    }
    try { if (fs.readdirSync(dir + '/data').length !== ${files}) errors.push('listing: wrong count'); } catch (e) { errors.push('listing: ' + e.code); }
    rounds++;
    await new Promise((r) => setImmediate(r));
  }
  console.log(JSON.stringify({ rounds, reads, maxStallMs: Math.round(maxStallMs), errors: errors.slice(0, 20), errorCount: errors.length }));
})();
`;
}
