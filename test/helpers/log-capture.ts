/** A pino logger whose records a test can read, at debug level and above. */
import { Writable } from 'node:stream';
import pino from 'pino';

export interface LogRecord {
  level: number;
  msg: string;
  [field: string]: unknown;
}

export function captureLogger(): { logger: pino.Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const sink = new Writable({
    write(line, _enc, cb) {
      records.push(JSON.parse(String(line)) as LogRecord);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), records };
}
