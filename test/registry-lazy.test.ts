/**
 * Lazy pulling through the registry client: reading one small file of a ≥ 50 MB
 * zstd:chunked image fetches the TOC and that file's chunk, a few percent of the layer,
 * counted from the registry's own access log.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { extractChunk, readLayerToc } from '../src/formats/index.js';
import { openImageSource } from '../src/image/open.js';
import { ReadCounter } from '../src/source/counting.js';
import type { ImageSource } from '../src/source/types.js';
import { buildImage, seededBytes, seededContent, type BuiltImage } from './helpers/images.js';
import { isolatedRegistryOptions } from './helpers/registry-env.js';
import { blobBytesServed, startRegistry, type TestRegistry } from './helpers/registry.js';

const BIG = 56 * 1024 * 1024;
const MOTD = 'Welcome to tocfs: only this file should travel.\n';

let tmp: string;
let reg: TestRegistry;
let img: BuiltImage;
let source: ImageSource | undefined;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-reglazy-'));
  img = await buildImage(join(tmp, 'image'), {
    format: 'zstd:chunked',
    layers: [
      [
        { path: 'etc', type: 'dir', mode: 0o755 },
        { path: 'etc/motd', content: MOTD },
        { path: 'usr', type: 'dir', mode: 0o755 },
        // Incompressible content keeps the compressed layer as large as the files.
        { path: 'usr/lib/big.bin', content: seededContent('big', BIG) },
        ...Array.from({ length: 40 }, (_, i) => ({ path: `usr/share/data/file-${i}`, content: seededBytes(`f${i}`, 64 * 1024) })),
      ],
    ],
  });
  reg = await startRegistry();
  await reg.load(img.dir, 'big');
});
after(async () => {
  await source?.close();
  await reg?.stop();
  await rm(tmp, { recursive: true, force: true });
});

test('one small file of a 56 MB zstd:chunked layer costs under 5 % of the layer in registry transfer', async (t) => {
  source = await openImageSource(`docker://${reg.host}/big:latest`, { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'env')) });
  const image = await source.resolve();
  assert.equal(image.manifestDigest, img.manifestDigest);
  const layer = image.layers[0]!;
  assert.ok(layer.size >= 50 * 1024 * 1024, `layer is ${layer.size} bytes`);

  const counter = new ReadCounter();
  const blob = counter.wrap(source.blob(layer));
  const toc = await readLayerToc(layer, blob);
  assert.equal(toc.verified, true);
  const motd = toc.entries.find((e) => e.path === 'etc/motd');
  assert.ok(motd, 'etc/motd is in the TOC');
  const parts: Buffer[] = [];
  for (const chunk of motd.chunks) {
    const compressed = await blob.read(chunk.compressedOffset, chunk.compressedEnd - chunk.compressedOffset);
    parts.push(await extractChunk(toc.compression, chunk, compressed, `layer ${layer.digest} etc/motd`));
  }
  assert.equal(Buffer.concat(parts).toString(), MOTD);

  // The registry writes its access-log line after the response: wait until every request is in it.
  const blobLines = (): number => reg.log.filter((l) => l.includes(`/blobs/${layer.digest} HTTP/1.1" 206`)).length;
  for (let i = 0; i < 100 && blobLines() < counter.requests; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(blobLines(), counter.requests);
  const served = blobBytesServed(reg.log, layer.digest);
  assert.equal(served, counter.bytes, 'the registry sent exactly the bytes the client read');
  const share = served / layer.size;
  t.diagnostic(`lazy read: ${counter.requests} range requests, ${served} of ${layer.size} bytes (${(share * 100).toFixed(3)} %)`);
  assert.ok(share < 0.05, `${(share * 100).toFixed(2)} % of the layer was transferred`);
});
