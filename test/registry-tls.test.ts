/**
 * TLS to a real docker-registry: trust from a certs.d directory, refusals that say what to do,
 * insecure registries. Each check runs on an image tocfs builds (never skipped) and on a corpus
 * image (skipped without the corpus).
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openImageSource, type SourceOptions } from '../src/image/open.js';
import { loadTlsSettings } from '../src/registry/tls.js';
import type { ImageSource } from '../src/source/types.js';
import { selfSigned, serverCert } from './helpers/registry-certs.js';
import { isolatedRegistryOptions, withEnv } from './helpers/registry-env.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { builtTestImage, corpusTestImage } from './helpers/test-images.js';

const IMAGES = [builtTestImage('regtls', [[{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'hello over TLS\n' }]], 'gzip'), corpusTestImage('gzip-plain-basic')];

for (const testImage of IMAGES) {
  describe(`registry TLS, ${testImage.label}`, { skip: testImage.skip }, () => {
    let tmp: string;
    let caCert: string;
    let https: TestRegistry;
    let plain: TestRegistry;
    const sources: ImageSource[] = [];
    const open = async (ref: string, opts: SourceOptions): Promise<ImageSource> => {
      const s = await openImageSource(ref, opts);
      sources.push(s);
      return s;
    };

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'tocfs-regtls-'));
      const ca = await selfSigned(tmp, 'ca', 'tocfs test CA');
      caCert = ca.cert;
      const server = await serverCert(tmp, 'registry', ca);
      https = await startRegistry({ tls: { certificate: server.cert, key: server.key } });
      await https.load(await testImage.dir(), 'app');
      plain = await startRegistry();
      await plain.load(await testImage.dir(), 'app');
    });
    after(async () => {
      await Promise.all(sources.map((s) => s.close()));
      await https?.stop();
      await plain?.stop();
      await rm(tmp, { recursive: true, force: true });
    });

    test('a CA in certs.d/HOST:PORT/ is trusted', async () => {
      const opts = await isolatedRegistryOptions(join(tmp, 'trusted'));
      await mkdir(join(opts.certsDir!, https.host), { recursive: true });
      await copyFile(caCert, join(opts.certsDir!, https.host, 'ca.crt'));
      const image = await (await open(`docker://${https.host}/app:latest`, { registry: opts })).resolve(testImage.resolveOptions);
      assert.ok(image.layers.length > 0);
    });

    test('TOCFS_CERTS_DIR names the certs.d directory', async () => {
      const dir = join(tmp, 'env-certs.d');
      await mkdir(join(dir, https.host), { recursive: true });
      await copyFile(caCert, join(dir, https.host, 'registry-ca.crt'));
      const { certsDir: _default, ...opts } = await isolatedRegistryOptions(join(tmp, 'env'));
      await withEnv('TOCFS_CERTS_DIR', dir, async () => {
        const s = await open(`docker://${https.host}/app:latest`, { registry: opts });
        const image = await s.resolve(testImage.resolveOptions);
        assert.equal((await s.blob(image.layers[0]!).read(0, 10)).length, 10);
      });
    });

    test('an untrusted certificate is refused with the fix in the message', async () => {
      const opts = await isolatedRegistryOptions(join(tmp, 'untrusted'));
      const logged = https.log.length;
      await assert.rejects((await open(`docker://${https.host}/app:latest`, { registry: opts })).resolve(), (e: Error) => {
        assert.equal(
          e.message.replace(/ \([A-Z_]+\)/, ''),
          `${https.host}: certificate signed by unknown authority: add the CA to ${opts.certsDir}/${https.host}/ca.crt or use --tls-verify=false`,
        );
        return true;
      });
      assert.ok(!https.log.slice(logged).some((l) => l.includes('"GET /v2/app/manifests')), 'nothing was requested over the untrusted connection');
    });

    test('--tls-verify=false and registries.conf insecure accept it', async () => {
      const opts = await isolatedRegistryOptions(join(tmp, 'noverify'));
      assert.ok((await (await open(`docker://${https.host}/app:latest`, { tlsVerify: false, registry: opts })).resolve(testImage.resolveOptions)).layers.length > 0);
      const insecure = await isolatedRegistryOptions(join(tmp, 'insecure'));
      await writeFile(insecure.registriesConf!, `[[registry]]\nlocation = "${https.host}"\ninsecure = true\n`);
      assert.ok((await (await open(`docker://${https.host}/app:latest`, { registry: insecure })).resolve(testImage.resolveOptions)).layers.length > 0);
    });

    test('a plain-HTTP registry: refused by default with a hint, used with --tls-verify=false or insecure', async () => {
      const opts = await isolatedRegistryOptions(join(tmp, 'plain'));
      await assert.rejects((await open(`docker://${plain.host}/app:latest`, { registry: opts })).resolve(), (e: Error) => {
        assert.match(e.message, new RegExp(`^${plain.host}: TLS handshake failed \\(wrong version number\\); if the registry serves plain HTTP, use --tls-verify=false or mark it insecure in registries.conf`));
        return true;
      });
      const s = await open(`docker://${plain.host}/app:latest`, { tlsVerify: false, registry: opts });
      const image = await s.resolve(testImage.resolveOptions);
      assert.equal((await s.blob(image.layers[0]!).read(5, 20)).length, 20);
      const insecure = await isolatedRegistryOptions(join(tmp, 'plain-insecure'));
      await writeFile(join(insecure.registriesConfDir!, '50-local.conf'), `[[registry]]\nprefix = "${plain.host}/app"\nlocation = "${plain.host}/app"\ninsecure = true\n`);
      assert.equal((await (await open(`docker://${plain.host}/app:latest`, { registry: insecure })).resolve(testImage.resolveOptions)).manifestDigest, image.manifestDigest);
    });

    test('certs.d: *.crt are added to the system CAs, NAME.cert pairs with NAME.key', async () => {
      const dir = join(tmp, 'pairs');
      await mkdir(join(dir, 'example.com:5000'), { recursive: true });
      await copyFile(caCert, join(dir, 'example.com:5000', 'a.crt'));
      await writeFile(join(dir, 'example.com:5000', 'client.cert'), 'CERT');
      await writeFile(join(dir, 'example.com:5000', 'client.key'), 'KEY');
      const s = await loadTlsSettings(dir, 'example.com:5000');
      assert.equal(s.cert, 'CERT');
      assert.equal(s.key, 'KEY');
      assert.ok(s.ca!.length > 1 && s.ca!.at(-1)!.includes('BEGIN CERTIFICATE'));
      assert.deepEqual(await loadTlsSettings(dir, 'other:5000'), { dir: join(dir, 'other:5000') });
      await writeFile(join(dir, 'example.com:5000', 'lonely.key'), 'KEY');
      await assert.rejects(loadTlsSettings(dir, 'example.com:5000'), /lonely.key: client key without its certificate lonely.cert/);
    });
  });
}
