/**
 * `tocfs inspect docker://…` against a real docker-registry on loopback: the same report as
 * from the OCI layout, and the registry's own access log shows that only footers and TOCs
 * were fetched (by range requests). One suite body runs on images tocfs builds (never skipped)
 * and on corpus images (skipped without the corpus).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { InspectReport } from '../src/cli/commands/inspect.js';
import { runCli } from './helpers/cli.js';
import { CORPUS_DIR, HAVE_CORPUS } from './helpers/corpus.js';
import { seededContent, type FileSpec, type ImageFormat } from './helpers/images.js';
import { blobBytesServed, startRegistry, type TestRegistry } from './helpers/registry.js';
import { builtTestImage, corpusTestImage, type TestImage } from './helpers/test-images.js';

const CORPUS_IMAGES = ['zstdchunked-podman4-basic', 'zstdchunked-skopeo118-basic', 'estargz-ctrremote-basic', 'gzip-plain-basic'];
// Built images big enough that footers and TOCs are a small part.
const BUILT: Record<string, ImageFormat> = { 'built-zstd-chunked': 'zstd:chunked', 'built-estargz': 'estargz', 'built-gzip': 'gzip' };
const BUILT_LAYERS: FileSpec[][] = [
  [{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'hello\n' }, { path: 'data', type: 'dir' }, { path: 'data/a.bin', content: seededContent('inspect-reg-a', 1_500_000) }],
  [{ path: 'data', type: 'dir' }, { path: 'data/b.bin', content: seededContent('inspect-reg-b', 1_000_000) }],
];

const SETS: Array<{ label: string; skip: string | false; images: Array<[string, TestImage]> }> = [
  { label: 'images tocfs builds', skip: false, images: Object.entries(BUILT).map(([name, format]) => [name, builtTestImage(`inspect-${name}`, BUILT_LAYERS, format)]) },
  { label: 'corpus images', skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`, images: CORPUS_IMAGES.map((name) => [name, corpusTestImage(name)]) },
];

for (const set of SETS) {
  describe(`tocfs inspect over a registry, ${set.label}`, { skip: set.skip }, () => {
    let reg: TestRegistry;
    let home: string;
    let env: NodeJS.ProcessEnv;

    before(async () => {
      home = await mkdtemp(join(tmpdir(), 'tocfs-inspect-'));
      await mkdir(join(home, 'certs.d'));
      await writeFile(join(home, 'registries.conf'), '');
      // Only files under the temp dir configure the client.
      env = { HOME: home, XDG_CONFIG_HOME: home, XDG_RUNTIME_DIR: home, CONTAINERS_REGISTRIES_CONF: join(home, 'registries.conf'), REGISTRY_AUTH_FILE: join(home, 'auth.json'), TOCFS_CERTS_DIR: join(home, 'certs.d') };
      reg = await startRegistry();
      for (const [image, testImage] of set.images) await reg.load(await testImage.dir(), image);
    });

    after(async () => {
      await reg?.stop();
      if (home) await rm(home, { recursive: true, force: true });
    });

    for (const [image, testImage] of set.images) {
      it(image, async () => {
        const local = await runCli(['inspect', `oci:${await testImage.dir()}`, '--json']);
        assert.equal(local.code, 0, local.stderr);
        const a = JSON.parse(local.stdout.toString()) as InspectReport;
        const layerBytesServed = (): number => a.layers.reduce((n, l) => n + blobBytesServed(reg.log, l.digest), 0);
        const before = layerBytesServed();
        const remote = await runCli(['inspect', `docker://${reg.host}/${image}:latest`, '--tls-verify=false', '--json', '--stats'], { env });
        assert.equal(remote.code, 0, remote.stderr);
        const b = JSON.parse(remote.stdout.toString()) as InspectReport;
        const { stats, reference: _r, ...rest } = b;
        const { reference: _l, ...expected } = a;
        assert.deepEqual(rest, expected);
        // The registry's log line for a request is written as it finishes; give it a moment.
        for (let i = 0; i < 50 && layerBytesServed() - before < stats!.bytesRead; i++) await new Promise((r) => setTimeout(r, 100));
        const served = layerBytesServed() - before;
        assert.equal(served, stats!.bytesRead, 'layer bytes the registry served = bytes inspect counted');
        assert.ok(served < stats!.blobBytes / 20, `served ${served} of ${stats!.blobBytes} blob bytes`);
      });
    }
  });
}
