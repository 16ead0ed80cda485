/** The request size a link asks for: several times its measured bandwidth-delay product, within bounds. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LinkEstimate, MIN_REQUEST_BYTES } from '../../src/fetch/link-estimate.js';

const MiB = 1024 * 1024;
const MAX = 8 * MiB;

function after(samples: number, bytes: number, waitMs: number, bodyMs: number): LinkEstimate {
  const link = new LinkEstimate();
  for (let i = 0; i < samples; i++) link.sample(bytes, waitMs, bodyMs);
  return link;
}

test('before any request: 1 MiB, or the cap when that is smaller', () => {
  assert.equal(new LinkEstimate().requestBytes(MAX), MIN_REQUEST_BYTES);
  assert.equal(new LinkEstimate().requestBytes(256 * 1024), 256 * 1024);
});

test('a registry that waits as long as it takes to send megabytes gets requests of several megabytes, up to the cap', () => {
  // Loopback docker-registry: ~10 ms before the first byte, 1 MiB in 2.5 ms (400 MB/s): 4 MiB per 10 ms.
  const fast = after(8, MiB, 10, 2.5);
  assert.equal(fast.requestBytes(MAX), MAX);
  assert.equal(fast.requestBytes(4 * MiB), 4 * MiB, 'never above fetch.max_request_bytes');
  assert.equal(fast.requestBytes(3 * MiB), 2 * MiB, 'a power of two within the cap');
});

test('a slow link with a long round trip keeps 1 MiB requests', () => {
  // 100 Mbit/s shared by 8 requests (~1.5 MB/s each), 20 ms round trip: 30 KB in flight.
  assert.equal(after(8, MiB, 21, 680).requestBytes(MAX), MIN_REQUEST_BYTES);
});

test('1 Gbit/s with a 2 ms round trip: between the two', () => {
  // ~8 ms before the first byte (2 ms RTT + the registry), 1 MiB at 60 MB/s per request: 0.5 MB in flight.
  assert.equal(after(8, MiB, 8, 17.5).requestBytes(MAX), 2 * MiB);
});

test('short bodies say nothing about the rate, and the estimate follows a link that changes', () => {
  const link = after(8, 64 * 1024, 10, 0.1);
  assert.equal(link.requestBytes(MAX), MIN_REQUEST_BYTES, 'no rate from 64 KiB bodies');
  for (let i = 0; i < 8; i++) link.sample(MiB, 10, 2.5);
  assert.equal(link.requestBytes(MAX), MAX);
  for (let i = 0; i < 16; i++) link.sample(MiB, 21, 680);
  assert.equal(link.requestBytes(MAX), MIN_REQUEST_BYTES, 'back to 1 MiB once the link slowed');
  assert.ok(link.current.bytesPerSec! < 10e6 && link.current.waitMs! > 20, `estimate ${JSON.stringify(link.current)}`);
});
