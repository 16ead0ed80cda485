/**
 * A TCP proxy that delays every chunk of data by half the round-trip time in each direction:
 * the RTT of the emulated WAN link (this kernel has no netem). Delays are pipelined (each
 * chunk leaves `delay` after it arrived), so the proxy adds latency, not a rate limit.
 *
 *   node --import tsx scripts/bench/delay-proxy.ts LISTEN_HOST:PORT TARGET_HOST:PORT RTT_MS
 */
import { createServer, connect, type Socket } from 'node:net';

/** Bytes held back per direction before the sender is paused. */
const QUEUE_LIMIT = 16 * 1024 * 1024;

function pipeDelayed(from: Socket, to: Socket, delayMs: number): void {
  const queue: Array<{ due: number; data: Buffer }> = [];
  let queued = 0;
  let ended = false;
  let blocked = false;
  let timer: NodeJS.Timeout | undefined;
  const now = (): number => performance.now();
  const updateFlow = (): void => {
    if (queued > QUEUE_LIMIT || blocked) from.pause();
    else from.resume();
  };
  const flush = (): void => {
    timer = undefined;
    const t = now();
    while (queue.length && queue[0]!.due <= t) {
      const { data } = queue.shift()!;
      queued -= data.length;
      if (!to.write(data) && !blocked) {
        blocked = true;
        to.once('drain', () => {
          blocked = false;
          updateFlow();
        });
      }
    }
    updateFlow();
    schedule();
  };
  const schedule = (): void => {
    if (timer) return;
    if (queue.length) timer = setTimeout(flush, Math.max(0, queue[0]!.due - now()));
    else if (ended) to.end();
  };
  from.on('data', (data: Buffer) => {
    queue.push({ due: now() + delayMs, data });
    queued += data.length;
    updateFlow();
    schedule();
  });
  from.on('end', () => {
    ended = true;
    schedule();
  });
}

function parseHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

const [listenArg, targetArg, rttArg] = process.argv.slice(2);
if (!listenArg || !targetArg || rttArg === undefined) {
  console.error('usage: delay-proxy.ts LISTEN_HOST:PORT TARGET_HOST:PORT RTT_MS');
  process.exit(2);
}
const listen = parseHostPort(listenArg);
const target = parseHostPort(targetArg);
const oneWay = Number(rttArg) / 2;

const server = createServer((client) => {
  const upstream = connect(target.port, target.host);
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
  pipeDelayed(client, upstream, oneWay);
  pipeDelayed(upstream, client, oneWay);
});
server.listen(listen.port, listen.host, () => console.log(`delay-proxy ${listenArg} -> ${targetArg} rtt ${rttArg} ms`));
process.on('SIGTERM', () => process.exit(0));
