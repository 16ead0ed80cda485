/**
 * A child process for test/store/use-counts.test.ts: changes use counts in the journal given
 * as argv[2] as fast as it can, printing `ack <key index> <count>` once each change is
 * durable, until it is killed.
 */
import pino from 'pino';
import { UseCounts } from '../../src/store/use-counts.js';

const [file, keys] = [process.argv[2]!, Number(process.argv[3] ?? 5)];
const key = (i: number): string => `sha256:${i.toString(16).padStart(64, '0')}`;
const counts = await UseCounts.open({ file, storeDir: '/crash/store', logger: pino({ level: 'silent' }) });
await counts.compact();
process.stdout.write('ready\n');
for (let n = 0; ; n++) {
  const i = n % keys;
  // Mostly up, sometimes down, so counts also go back to 0 and disappear from the journal.
  const { uses, durable } = counts.change('crash.test/app:latest', key(i), n % 7 === 3 ? -3 : 1, { digest: key(i), size: 1000 + i, format: 'zstd:chunked', platform: 'linux/amd64' });
  await durable;
  process.stdout.write(`ack ${i} ${uses}\n`);
}
