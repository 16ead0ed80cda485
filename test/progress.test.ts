/**
 * Progress: a redrawn bar on a terminal; structured log lines at every 10 % (or every N
 * seconds) elsewhere. Time comes from a clock the test moves, so nothing here is timed.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger } from '../src/log.js';
import { createProgress, renderProgressLine } from '../src/progress.js';

function logCollector() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger({ level: 'info', destination: stream }), lines };
}

function fakeTerminal(columns = 100) {
  let out = '';
  return { stream: { isTTY: true, columns, write: (s: string) => (out += s) }, output: () => out };
}

const MiB = 1024 * 1024;

describe('progress in logs (no terminal)', () => {
  it('writes one line per 10 % step and a final line, with done, total, percent, rate and ETA', () => {
    const { logger, lines } = logCollector();
    let t = 0;
    const p = createProgress({ label: 'prefetch sha256:ab', total: 100 * MiB, logger, stream: { isTTY: false, write: () => true }, now: () => t });
    for (let mb = 1; mb <= 100; mb++) {
      t += 100; // 1 MiB per 100 ms: 10 MiB/s
      p.update(mb * MiB);
    }
    p.done();
    const percents = lines.map((l) => l.percent);
    assert.deepEqual(percents, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 100]);
    assert.equal(lines[0]!.progress, 'prefetch sha256:ab');
    assert.equal(lines[0]!.msg, 'prefetch sha256:ab: 10%');
    assert.equal(lines[0]!.done, 10 * MiB);
    assert.equal(lines[0]!.total, 100 * MiB);
    assert.equal(lines[0]!.rate, 10 * MiB);
    assert.equal(lines[0]!.etaSeconds, 9);
    assert.equal(lines.at(-1)!.msg, 'prefetch sha256:ab: done');
  });

  it('also writes a line every N seconds while the percentage creeps', () => {
    const { logger, lines } = logCollector();
    let t = 0;
    const p = createProgress({ label: 'fetch', total: 1000, logger, stream: { isTTY: false, write: () => true }, logEverySeconds: 5, now: () => t });
    for (let i = 1; i <= 20; i++) {
      t += 1000;
      p.update(i); // 0.1 % a second: no 10 % step
    }
    assert.equal(lines.length, 4); // at 5, 10, 15, 20 s
    assert.deepEqual(lines.map((l) => l.done), [5, 10, 15, 20]);
  });

  it('logs a failure with the error and stops', () => {
    const { logger, lines } = logCollector();
    const p = createProgress({ label: 'convert', total: 10, logger, stream: { isTTY: false, write: () => true }, now: () => 0 });
    p.fail(new Error('disk full'));
    p.update(10);
    p.done();
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.level, 50);
    assert.equal(lines[0]!.msg, 'convert: failed');
    assert.equal((lines[0]!.err as { message: string }).message, 'disk full');
  });
});

describe('progress on a terminal', () => {
  it('redraws one line with bar, percent, bytes, rate and ETA, and writes no log lines', () => {
    const { logger, lines } = logCollector();
    const term = fakeTerminal();
    let t = 0;
    const p = createProgress({ label: 'prefetch', total: 8 * MiB, logger, stream: term.stream, now: () => t });
    t = 1000;
    p.update(2 * MiB);
    t = 1050;
    p.update(3 * MiB); // within the redraw interval: not drawn
    t = 2000;
    p.update(4 * MiB);
    p.done();
    const frames = term.output().split('\r').filter(Boolean);
    assert.equal(frames.length, 3);
    assert.equal(frames[0], 'prefetch [######------------------]  25% 2.00 MiB/8.00 MiB 2.00 MiB/s ETA 3s\x1b[K');
    assert.equal(frames[1], 'prefetch [############------------]  50% 4.00 MiB/8.00 MiB 2.00 MiB/s ETA 2s\x1b[K');
    assert.match(frames[2]!, /^prefetch \[#{24}\] 100% 8\.00 MiB\/8\.00 MiB .* ETA 0s\x1b\[K\n$/);
    assert.equal(lines.length, 0);
  });

  it('fits the terminal width and handles an unknown total', () => {
    const line = renderProgressLine('x'.repeat(200), { done: 1536, total: null, percent: null, rate: 512, etaSeconds: null, elapsedSeconds: 3 }, 'bytes', 60);
    assert.ok(line.length <= 60, line);
    assert.ok(line.endsWith('1.50 KiB 512 B/s'), line);
    assert.equal(renderProgressLine('files', { done: 3, total: 12, percent: 25, rate: 1, etaSeconds: 9, elapsedSeconds: 3 }, 'items'), 'files [######------------------]  25% 3/12 1/s ETA 9s');
  });
});
