/**
 * Progress of long jobs (prefetch, background fetch, convert, cache gc): a redrawn bar on a
 * terminal, periodic structured log lines otherwise (under systemd, in CI, in a pipe).
 *
 *   const p = createProgress({ label: 'prefetch sha256:ab12…', total: layerBytes });
 *   p.update(bytesSoFar); … p.done();   // or p.fail(err)
 */
import type { Logger } from 'pino';
import { humanBytes } from './units.js';
import { logger as rootLogger } from './log.js';

export interface ProgressOptions {
  label: string;
  /** Units of work in all (bytes unless `unit` says otherwise); undefined when not known up front. */
  total?: number;
  unit?: 'bytes' | 'items';
  /** Where non-terminal progress lines go; default the process logger. */
  logger?: Logger;
  /** The terminal to draw on; default stderr. A bar is drawn only when it is a TTY. */
  stream?: { isTTY?: boolean; columns?: number; write(s: string): unknown };
  /** Seconds between log lines when not on a terminal (a line is also written at every 10 %). */
  logEverySeconds?: number;
  /** Clock in milliseconds; tests pass their own. */
  now?: () => number;
}

export interface Progress {
  /** Work done so far (absolute, not a delta). */
  update(done: number): void;
  /** The job finished; draws or logs the final state. */
  done(): void;
  fail(err: unknown): void;
}

export interface ProgressSnapshot {
  done: number;
  total: number | null;
  percent: number | null;
  /** Units per second since the start. */
  rate: number;
  /** Seconds left at the current rate, when known. */
  etaSeconds: number | null;
  elapsedSeconds: number;
}

const REDRAW_MS = 100;
const BAR_WIDTH = 24;

function formatEta(s: number): string {
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.ceil(s)}s`;
}

/** One line of the terminal form: `label [#####-------] 42% 12.0 MiB/28.6 MiB 5.10 MiB/s ETA 3s`. */
export function renderProgressLine(label: string, s: ProgressSnapshot, unit: 'bytes' | 'items', columns = 100): string {
  const amount = unit === 'bytes' ? humanBytes : (n: number) => String(Math.floor(n));
  const filled = s.percent === null ? 0 : Math.round((s.percent / 100) * BAR_WIDTH);
  const parts = [
    s.percent === null ? '' : `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${s.percent.toFixed(0).padStart(3)}%`,
    s.total === null ? amount(s.done) : `${amount(s.done)}/${amount(s.total)}`,
    `${amount(s.rate)}/s`,
    s.etaSeconds === null ? '' : `ETA ${formatEta(s.etaSeconds)}`,
  ].filter(Boolean);
  const tail = parts.join(' ');
  const room = Math.max(8, columns - tail.length - 2);
  const name = label.length > room ? `${label.slice(0, room - 1)}…` : label;
  return `${name} ${tail}`;
}

export function createProgress(opts: ProgressOptions): Progress {
  const now = opts.now ?? Date.now;
  const stream = opts.stream ?? process.stderr;
  const tty = stream.isTTY === true;
  const log = (opts.logger ?? rootLogger()).child({ progress: opts.label });
  const unit = opts.unit ?? 'bytes';
  const logEveryMs = (opts.logEverySeconds ?? 10) * 1000;
  const start = now();
  let current = 0;
  let lastDraw = -Infinity;
  let lastLog = start;
  let lastDecile = 0;
  let finished = false;

  const snapshot = (): ProgressSnapshot => {
    const elapsedSeconds = (now() - start) / 1000;
    const total = opts.total ?? null;
    const rate = elapsedSeconds > 0 ? current / elapsedSeconds : 0;
    const percent = total === null ? null : total === 0 ? 100 : Math.min(100, (current / total) * 100);
    const etaSeconds = total === null || rate <= 0 ? null : Math.max(0, (total - current) / rate);
    return { done: current, total, percent, rate, etaSeconds, elapsedSeconds };
  };

  const draw = (final: boolean) => {
    stream.write(`\r${renderProgressLine(opts.label, snapshot(), unit, stream.columns)}\x1b[K${final ? '\n' : ''}`);
  };

  const logLine = (s: ProgressSnapshot, msg: string) => {
    log.info({ done: s.done, total: s.total, percent: s.percent === null ? null : Math.floor(s.percent), rate: Math.round(s.rate), etaSeconds: s.etaSeconds === null ? null : Math.ceil(s.etaSeconds) }, msg);
  };

  return {
    update(done) {
      if (finished) return;
      current = done;
      const t = now();
      if (tty) {
        if (t - lastDraw >= REDRAW_MS) {
          lastDraw = t;
          draw(false);
        }
        return;
      }
      const s = snapshot();
      const decile = s.percent === null ? 0 : Math.floor(s.percent / 10);
      if (decile > lastDecile || t - lastLog >= logEveryMs) {
        lastDecile = Math.max(lastDecile, decile);
        lastLog = t;
        logLine(s, s.percent === null ? `${opts.label}: ${current} so far` : `${opts.label}: ${Math.floor(s.percent)}%`);
      }
    },
    done() {
      if (finished) return;
      finished = true;
      if (opts.total !== undefined) current = Math.max(current, opts.total);
      if (tty) draw(true);
      else logLine(snapshot(), `${opts.label}: done`);
    },
    fail(err) {
      if (finished) return;
      finished = true;
      if (tty) stream.write('\n');
      log.error({ err, done: current, total: opts.total ?? null }, `${opts.label}: failed`);
    },
  };
}
