/**
 * Faults a real registry cannot produce, injected by a proxy in front of a real
 * docker-registry (with htpasswd auth): every read either returns the right bytes or fails
 * with a clear error — never wrong bytes. Each fault is injected on an image tocfs builds (never
 * skipped) and on a corpus image (skipped without the corpus).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { openImageSource } from '../src/image/open.js';
import type { RegistryClientOptions } from '../src/registry/options.js';
import type { Descriptor, ImageSource, ResolvedImage } from '../src/source/types.js';
import { seededContent } from './helpers/images.js';
import { isolatedRegistryOptions, writeAuthFile } from './helpers/registry-env.js';
import { MANIFEST_PATH, startBlobStorage, startFaultProxy, type BlobStorage, type FaultProxy } from './helpers/registry-fault-proxy.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { builtTestImage, corpusTestImage } from './helpers/test-images.js';

const IMAGES = [
  builtTestImage('regfaults', [[{ path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('regfaults-big', 400_000) }], [{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'hi\n' }]]),
  corpusTestImage('zstdchunked-skopeo118-basic'),
];

for (const testImage of IMAGES) {
  describe(`registry faults, ${testImage.label}`, { skip: testImage.skip }, () => {
    let tmp: string;
    let reg: TestRegistry;
    let proxy: FaultProxy;
    let storage: BlobStorage;
    let opts: RegistryClientOptions;
    let local: ImageSource;
    let image: ResolvedImage;
    let layer: Descriptor; // the largest layer
    const sources: ImageSource[] = [];
    const open = async (extra: Partial<RegistryClientOptions> = {}): Promise<ImageSource> => {
      const s = await openImageSource(`docker://${proxy.host}/app:latest`, { tlsVerify: false, registry: { ...opts, ...extra } });
      sources.push(s);
      await s.resolve(testImage.resolveOptions);
      return s;
    };
    const expected = (off: number, len: number): Promise<Buffer> => local.blob(layer).read(off, len);
    const blobRequests = (): FaultProxy['requests'] => proxy.requests.filter((r) => r.path.includes(`/blobs/${layer.digest}`));

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'tocfs-regfaults-'));
      const { stdout } = await promisify(execFile)('htpasswd', ['-Bbn', 'carol', 'c4r0l-pw']);
      await writeFile(join(tmp, 'htpasswd'), stdout);
      reg = await startRegistry({ extraConfig: `auth:\n  htpasswd:\n    realm: tocfs-test\n    path: ${join(tmp, 'htpasswd')}\n` });
      await reg.load(await testImage.dir(), 'app');
      proxy = await startFaultProxy(reg.host);
      storage = await startBlobStorage(reg.root);
      opts = await isolatedRegistryOptions(tmp);
      await writeAuthFile(opts.authFile!, { [proxy.host]: { username: 'carol', password: 'c4r0l-pw' } });
      local = await openImageSource(`oci:${await testImage.dir()}`);
      image = await local.resolve(testImage.resolveOptions);
      layer = [...image.layers].sort((a, b) => b.size - a.size)[0]!;
      assert.ok(layer.size > 100_000, 'a layer large enough to cut in the middle');
    });
    beforeEach(() => {
      proxy.clear();
      proxy.requests.length = 0;
    });
    after(async () => {
      await Promise.all(sources.map((s) => s.close()));
      await local?.close();
      await proxy?.close();
      await storage?.close();
      await reg?.stop();
      await rm(tmp, { recursive: true, force: true });
    });

    test('a connection cut mid-body resumes where it stopped', async () => {
      const s = await open();
      proxy.inject({ kind: 'cut', afterBytes: 30_000 });
      const got = await s.blob(layer).read(1000, 80_000);
      assert.ok(got.equals(await expected(1000, 80_000)));
      const reqs = blobRequests();
      assert.deepEqual(reqs.map((r) => [r.headers.range, r.fault]), [
        ['bytes=1000-80999', 'cut'],
        ['bytes=31000-80999', undefined],
      ]);
    });

    test('stream() of a whole layer survives a cut and matches the digest', async () => {
      const s = await open();
      proxy.inject({ kind: 'cut', afterBytes: 50_000 });
      const h = createHash('sha256');
      for await (const c of await s.blob(layer).stream()) h.update(c as Buffer);
      assert.equal('sha256:' + h.digest('hex'), layer.digest);
      assert.deepEqual(blobRequests().map((r) => r.headers.range), [undefined, `bytes=50000-${layer.size - 1}`]);
    });

    test('a 503 burst is retried; a registry that stays down is reported', async () => {
      const s = await open();
      proxy.inject({ kind: 'status', status: 503, body: '{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}' }, { times: 3 });
      assert.ok((await s.blob(layer).read(5, 5000)).equals(await expected(5, 5000)));
      assert.equal(blobRequests().length, 4);

      proxy.inject({ kind: 'status', status: 503, body: '{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}' }, { times: Infinity });
      await assert.rejects(s.blob(layer).read(0, 10), (e: Error) => {
        assert.equal(e.message, `blob ${layer.digest} of ${proxy.host}/app: ${proxy.host} answered 503 UNAVAILABLE: try later (gave up after 4 attempts)`);
        return true;
      });
    });

    test('manifest requests are retried too (502, connection reset)', async () => {
      proxy.inject({ kind: 'status', status: 502 }, { match: MANIFEST_PATH });
      proxy.inject({ kind: 'reset' }, { match: MANIFEST_PATH });
      const s = await open();
      assert.equal((await s.resolve(testImage.resolveOptions)).manifestDigest, image.manifestDigest);
      assert.deepEqual(proxy.requests.filter((r) => MANIFEST_PATH.test(r.path)).map((r) => r.fault).slice(0, 3), ['status', 'reset', undefined]);
    });

    test('429 with Retry-After is honoured', async () => {
      const s = await open();
      proxy.inject({ kind: 'status', status: 429, headers: { 'retry-after': '1' } });
      assert.ok((await s.blob(layer).read(100, 100)).equals(await expected(100, 100)));
      const [limited, retried] = blobRequests();
      assert.equal(limited!.fault, 'status');
      // The configured backoff is at most 50 ms: only Retry-After explains a wait of a second.
      assert.ok(retried!.at - limited!.at >= 1000, `retried after ${retried!.at - limited!.at} ms`);
    });

    test('a wrong Content-Range is retried, and reported when it persists', async () => {
      const s = await open();
      proxy.inject({ kind: 'shift-range', by: 1 });
      assert.ok((await s.blob(layer).read(4096, 8192)).equals(await expected(4096, 8192)));
      assert.deepEqual(blobRequests().map((r) => r.fault), ['shift-range', undefined]);

      proxy.inject({ kind: 'shift-range', by: 1 }, { times: Infinity });
      await assert.rejects(s.blob(layer).read(4096, 8192), (e: Error) => {
        assert.equal(
          e.message,
          `blob ${layer.digest} of ${proxy.host}/app: asked for bytes 4096-12287/${layer.size}, got Content-Range "bytes 4097-12288/${layer.size}" (gave up after 4 attempts)`,
        );
        return true;
      });
    });

    test('a 200 with the whole blob answering a Range request is cut to the range', async () => {
      const s = await open();
      proxy.inject({ kind: 'ignore-range' }, { times: 2 });
      const off = layer.size - 5000;
      assert.ok((await s.blob(layer).read(off, 3000)).equals(await expected(off, 3000)));
      assert.ok((await s.blob(layer).read(7, 1)).equals(await expected(7, 1)));
      assert.deepEqual(blobRequests().map((r) => r.fault), ['ignore-range', 'ignore-range']);
    });

    test('a body that stalls hits the stall timeout and is resumed; a registry that answers yet stalls every body is an error after the retries', async () => {
      const s = await open({ timeouts: { stallMs: 300 } });
      proxy.inject({ kind: 'stall', afterBytes: 5000 });
      assert.ok((await s.blob(layer).read(0, 20_000)).equals(await expected(0, 20_000)));
      const reqs = blobRequests();
      assert.equal(reqs[0]!.fault, 'stall');
      assert.equal(reqs.at(-1)!.headers.range, 'bytes=5000-19999');

      proxy.inject({ kind: 'stall', afterBytes: 1000 }, { times: Infinity });
      await assert.rejects(s.blob(layer).read(0, 20_000), /no data for 300ms \(registry\.stall_timeout\) \(gave up after 4 attempts\)/);
    });

    test('a caller abort stops at once, without retries', async () => {
      const s = await open();
      proxy.inject({ kind: 'trickle', bytesPerSecond: 1000 }, { times: Infinity });
      const ac = new AbortController();
      setTimeout(() => ac.abort(new Error('caller gave up')), 200);
      await assert.rejects(s.blob(layer).read(0, 20_000, ac.signal));
      assert.equal(blobRequests().length, 1);
    });

    test('a redirect to blob storage: Range is sent again, the registry credentials are not; the target is reused until it fails', async () => {
      const s = await open();
      proxy.inject({ kind: 'redirect', to: storage.url }, { times: 2 });
      assert.ok((await s.blob(layer).read(12_345, 6789)).equals(await expected(12_345, 6789)));
      const [toRegistry] = blobRequests();
      assert.match(String(toRegistry!.headers.authorization), /^Basic /, 'the registry got its credentials');
      const atStorage = storage.requests.at(-1)!;
      assert.equal(atStorage.path, `/v2/app/blobs/${layer.digest}`);
      assert.equal(atStorage.headers.range, 'bytes=12345-19133');
      assert.equal(atStorage.headers.authorization, undefined);

      // The next range goes straight to storage...
      const atStorageBefore = storage.requests.length;
      assert.ok((await s.blob(layer).read(500, 100)).equals(await expected(500, 100)));
      assert.equal(blobRequests().length, 1);
      assert.equal(storage.requests.length, atStorageBefore + 1);
      // ...until storage refuses it (an expired URL): then the registry is asked again and redirects anew.
      storage.expire();
      assert.ok((await s.blob(layer).read(900, 100)).equals(await expected(900, 100)));
      assert.equal(blobRequests().length, 2);
      assert.deepEqual(storage.requests.slice(atStorageBefore + 1).map((r) => r.headers.range), ['bytes=900-999', 'bytes=900-999']);
    });
  });
}
