/**
 * registries.conf against real registries: a pull-through-cache docker-registry as a
 * [[registry.mirror]] (used first, origin as fallback), location rewrites, blocked registries;
 * each check runs on an image tocfs builds (never skipped) and on a corpus image (skipped
 * without the corpus).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openImageSource, type SourceOptions } from '../src/image/open.js';
import type { RegistryClientOptions } from '../src/registry/options.js';
import type { ImageSource } from '../src/source/types.js';
import { seededContent, type FileSpec } from './helpers/images.js';
import { isolatedRegistryOptions, withEnv } from './helpers/registry-env.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { builtTestImage, corpusTestImage } from './helpers/test-images.js';

const MIRROR_LAYERS: FileSpec[][] = [
  [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=1\n' }, { path: 'data', type: 'dir' }, { path: 'data/blob.bin', content: seededContent('mirror-blob', 100_000) }],
  // Every layer large enough for a 1000-byte read from a third of the way in.
  [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=2\n' }, { path: 'etc/key', content: seededContent('mirror-key', 4096) }],
];
const IMAGES = [builtTestImage('regmirror', MIRROR_LAYERS), corpusTestImage('zstdchunked-skopeo118-layers')];
/** Access-log lines of requests tocfs made (the mirror's own requests to the origin say Go-http-client). */
const fromTocfs = (log: string[]): string[] => log.filter((l) => l.endsWith('"tocfs"'));

for (const testImage of IMAGES) {
  describe(`registries.conf with real registries, ${testImage.label}`, { skip: testImage.skip }, () => {
    let tmp: string;
    let origin: TestRegistry;
    let mirror: TestRegistry;
    const sources: ImageSource[] = [];
    const open = async (ref: string, opts: SourceOptions): Promise<ImageSource> => {
      const s = await openImageSource(ref, opts);
      sources.push(s);
      return s;
    };
    /** Options whose registries.conf comes from $CONTAINERS_REGISTRIES_CONF, as Podman reads it. */
    async function withConf(name: string, conf: string, fn: (opts: RegistryClientOptions) => Promise<void>): Promise<void> {
      const { registriesConf: _none, ...opts } = await isolatedRegistryOptions(join(tmp, name));
      const file = join(tmp, name, 'env-registries.conf');
      await writeFile(file, conf);
      await withEnv('CONTAINERS_REGISTRIES_CONF', file, () => fn(opts));
    }

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'tocfs-regmirror-'));
      origin = await startRegistry();
      await origin.load(await testImage.dir(), 'app');
      await origin.load(await testImage.dir(), 'corp/app');
      mirror = await startRegistry({ extraConfig: `proxy:\n  remoteurl: http://${origin.host}\n` });
    });
    after(async () => {
      await Promise.all(sources.map((s) => s.close()));
      await mirror?.stop();
      await origin?.stop();
      await rm(tmp, { recursive: true, force: true });
    });

    test('the mirror is used first; the origin when the mirror is down', async () => {
      const conf = `[[registry]]\nlocation = "${origin.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${mirror.host}"\ninsecure = true\n`;
      await withConf('mirror', conf, async (opts) => {
        const local = await open(`oci:${await testImage.dir()}`, {});
        const want = await local.resolve(testImage.resolveOptions);
        const viaMirror = await open(`docker://${origin.host}/app:latest`, { registry: opts });
        const got = await viaMirror.resolve(testImage.resolveOptions);
        assert.equal(got.reference, `docker://${origin.host}/app:latest`);
        assert.equal(got.manifestDigest, want.manifestDigest);
        for (const l of got.layers) {
          // A pull-through cache answers a range of a blob it has not cached yet with the whole blob (200).
          const off = Math.floor(l.size / 3);
          assert.ok((await viaMirror.blob(l).read(off, 1000)).equals(await local.blob(l).read(off, 1000)));
        }
        assert.ok(fromTocfs(mirror.log).some((l) => l.includes('"GET /v2/app/manifests/latest HTTP/1.1" 200')), 'the mirror served the manifest');
        assert.ok(fromTocfs(mirror.log).some((l) => /"GET \/v2\/app\/blobs\/sha256:[0-9a-f]{64} HTTP\/1.1" 20[06] /.test(l)), 'the mirror served blobs');
        assert.deepEqual(fromTocfs(origin.log), [], 'tocfs did not ask the origin');

        await mirror.stop();
        // The source that resolved through the mirror goes on reading from the origin...
        const l = got.layers.at(-1)!;
        assert.ok((await viaMirror.blob(l).read(0, 777)).equals(await local.blob(l).read(0, 777)));
        // ...and a new one resolves there.
        const viaOrigin = await open(`docker://${origin.host}/app:latest`, { registry: opts });
        assert.equal((await viaOrigin.resolve(testImage.resolveOptions)).manifestDigest, want.manifestDigest);
        assert.ok(fromTocfs(origin.log).some((x) => x.includes('"GET /v2/app/manifests/latest HTTP/1.1" 200')));
        assert.ok(fromTocfs(origin.log).some((x) => x.includes(`"GET /v2/app/blobs/${l.digest} HTTP/1.1" 206 777`)));
      });
    });

    test('a location rewrite pulls a name from another registry and repository', async () => {
      const conf = `[[registry]]\nprefix = "registry.example.invalid/team"\nlocation = "${origin.host}/corp"\ninsecure = true\n`;
      await withConf('rewrite', conf, async (opts) => {
        const s = await open('registry.example.invalid/team/app:latest', { registry: opts });
        const image = await s.resolve(testImage.resolveOptions);
        assert.equal(image.reference, 'docker://registry.example.invalid/team/app:latest');
        assert.equal((await s.blob(image.layers[0]!).read(0, 16)).length, 16);
        assert.ok(fromTocfs(origin.log).some((x) => x.includes('"GET /v2/corp/app/manifests/latest HTTP/1.1" 200')));
      });
    });

    test('a blocked registry is refused before any request', async () => {
      await withConf('blocked', `[[registry]]\nlocation = "${origin.host}"\nblocked = true\n`, async (opts) => {
        const before = origin.log.length;
        await assert.rejects((await open(`docker://${origin.host}/app:latest`, { registry: opts })).resolve(), (e: Error) => {
          assert.equal(e.message, `registry ${origin.host} is blocked by the entry for "${origin.host}" in registries.conf (${process.env.CONTAINERS_REGISTRIES_CONF})`);
          return true;
        });
        assert.equal(origin.log.length, before);
      });
    });
  });
}
