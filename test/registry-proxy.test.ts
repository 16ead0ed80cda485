/**
 * HTTP(S)_PROXY and NO_PROXY: a real docker-registry reached by a name only a CONNECT proxy
 * beside it can resolve, so a pull that works went through the proxy, and one that was
 * meant to go direct fails with "host not found". Each check runs on an image tocfs builds
 * (never skipped) and on a corpus image (skipped without the corpus).
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openImageSource } from '../src/image/open.js';
import { proxyFor } from '../src/registry/proxy.js';
import { runCli } from './helpers/cli.js';
import { startConnectProxy, type TestProxy } from './helpers/connect-proxy.js';
import { selfSigned, serverCert } from './helpers/registry-certs.js';
import { isolatedRegistryOptions } from './helpers/registry-env.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { builtTestImage, corpusTestImage } from './helpers/test-images.js';

const IMAGES = [
  builtTestImage('regproxy', [[{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'hello through a proxy\n'.repeat(20) }]], 'gzip'),
  corpusTestImage('gzip-plain-basic'),
];
const NAME = 'registry.tocfs.test';

test('proxyFor: Podman\'s (Go\'s) environment rules', () => {
  const env = { HTTP_PROXY: 'http://p:3128', HTTPS_PROXY: 'proxy.corp:8080', NO_PROXY: 'direct.example, .inner.example,10.1.0.0/16,192.168.1.5,quay.example:8443,[2001:db8::1]' };
  const via = (u: string, e: NodeJS.ProcessEnv = env): string | undefined => proxyFor(new URL(u), e)?.href;
  assert.equal(via('http://reg.example/v2/'), 'http://p:3128/');
  assert.equal(via('https://reg.example/v2/'), 'http://proxy.corp:8080/', 'no scheme: http://');
  assert.equal(via('https://reg.example/', { HTTP_PROXY: 'http://p:3128' }), undefined, 'HTTP_PROXY is not used for https');
  assert.equal(via('http://reg.example/', { http_proxy: 'http://lower:1' }), 'http://lower:1/');
  assert.equal(via('http://reg.example/', { HTTP_PROXY: 'http://upper:1', http_proxy: 'http://lower:1' }), 'http://upper:1/');
  for (const direct of ['https://direct.example/', 'https://a.direct.example/', 'https://x.inner.example/', 'https://10.1.2.3/', 'https://192.168.1.5:5000/', 'https://quay.example:8443/', 'https://[2001:db8::1]/'])
    assert.equal(via(direct), undefined, direct);
  for (const proxied of ['https://inner.example/', 'https://notdirect.example/', 'https://10.2.0.1/', 'https://quay.example/', 'https://192.168.1.6/'])
    assert.equal(via(proxied), 'http://proxy.corp:8080/', proxied);
  for (const loopback of ['http://localhost:5000/', 'http://127.0.0.1:5000/', 'http://127.9.9.9/', 'http://[::1]:5000/']) assert.equal(via(loopback), undefined, loopback);
  assert.equal(via('https://reg.example/', { ...env, NO_PROXY: '*' }), undefined);
  assert.throws(() => via('https://reg.example/', { HTTPS_PROXY: 'socks5://user:secret@s:1080' }), (e: Error) => /socks5:\/\/ proxies are not supported/.test(e.message) && !e.message.includes('secret'));
});

for (const testImage of IMAGES) {
  describe(`registry through a CONNECT proxy, ${testImage.label}`, { skip: testImage.skip }, () => {
    let tmp: string;
    let reg: TestRegistry;
    let tlsReg: TestRegistry;
    let proxy: TestProxy;
    let authProxy: TestProxy;
    let ca: string;
    /** The manifest digest the image resolves to (set in before), named as expected.json names it. */
    const expected = { manifest_digest: '' };

    /** Resolves `ref` with `env` as the proxy environment and reads the end of its layer. */
    async function pull(ref: string, env: NodeJS.ProcessEnv, dir: string, tlsVerify = false): Promise<string> {
      const registry = await isolatedRegistryOptions(join(tmp, dir), { env });
      if (tlsVerify) {
        await mkdir(join(registry.certsDir!, `${NAME}:${tlsReg.port}`), { recursive: true });
        await copyFile(ca, join(registry.certsDir!, `${NAME}:${tlsReg.port}`, 'ca.crt'));
      }
      const source = await openImageSource(ref, { tlsVerify, registry });
      try {
        const image = await source.resolve(testImage.resolveOptions);
        const layer = image.layers[0]!;
        assert.equal((await source.blob(layer).read(layer.size - 100, 100)).length, 100);
        return image.manifestDigest;
      } finally {
        await source.close();
      }
    }

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'tocfs-regproxy-'));
      expected.manifest_digest = await testImage.manifestDigest();
      reg = await startRegistry();
      await reg.load(await testImage.dir(), 'app');
      const caPair = await selfSigned(tmp, 'ca', 'tocfs proxy test CA');
      ca = caPair.cert;
      const server = await serverCert(tmp, 'registry', caPair, [NAME]);
      tlsReg = await startRegistry({ tls: { certificate: server.cert, key: server.key } });
      await tlsReg.load(await testImage.dir(), 'app');
      proxy = await startConnectProxy({ hosts: { [NAME]: '127.0.0.1' } });
      authProxy = await startConnectProxy({ hosts: { [NAME]: '127.0.0.1' }, auth: { user: 'pxuser', password: 'px-secret-77' } });
    });
    after(async () => {
      await proxy?.close();
      await authProxy?.close();
      await reg?.stop();
      await tlsReg?.stop();
      await rm(tmp, { recursive: true, force: true });
    });

    test('HTTP_PROXY carries plain-HTTP registry traffic; NO_PROXY and loopback go direct', async () => {
      const ref = `docker://${NAME}:${reg.port}/app:latest`;
      assert.equal(await pull(ref, { HTTP_PROXY: proxy.url }, 'http'), expected.manifest_digest);
      assert.ok(proxy.connects.some((c) => c.target === `${NAME}:${reg.port}` && c.status === 200), JSON.stringify(proxy.connects));

      for (const noProxy of [NAME, '.tocfs.test', `${NAME}:${reg.port}`, 'other.example,tocfs.test']) {
        const before = proxy.connects.length;
        await assert.rejects(pull(ref, { HTTP_PROXY: proxy.url, NO_PROXY: noProxy }, 'np'), new RegExp(`${NAME}:${reg.port}: host not found`), noProxy);
        assert.equal(proxy.connects.length, before, `NO_PROXY=${noProxy}: nothing went through the proxy`);
      }
      // Another port than the one NO_PROXY names is still proxied.
      assert.equal(await pull(ref, { HTTP_PROXY: proxy.url, NO_PROXY: `${NAME}:1` }, 'np-port'), expected.manifest_digest);

      const before = proxy.connects.length;
      assert.equal(await pull(`docker://${reg.host}/app:latest`, { HTTP_PROXY: proxy.url }, 'loopback'), expected.manifest_digest);
      assert.equal(proxy.connects.length, before, 'loopback is never proxied');
    });

    test('HTTPS_PROXY tunnels TLS to the registry, which is verified with its certs.d CA as without a proxy', async () => {
      const ref = `docker://${NAME}:${tlsReg.port}/app:latest`;
      assert.equal(await pull(ref, { HTTPS_PROXY: proxy.url }, 'https', true), expected.manifest_digest);
      assert.ok(proxy.connects.some((c) => c.target === `${NAME}:${tlsReg.port}` && c.status === 200));
      // HTTP_PROXY alone does not apply to https: direct, and the name does not resolve.
      await assert.rejects(pull(ref, { HTTP_PROXY: proxy.url }, 'https-httpproxy', true), /host not found/);
      // Without the CA the registry's certificate is refused inside the tunnel too.
      const registry = await isolatedRegistryOptions(join(tmp, 'https-noca'), { env: { HTTPS_PROXY: proxy.url } });
      const source = await openImageSource(ref, { registry });
      await assert.rejects(source.resolve(testImage.resolveOptions), /certificate signed by unknown authority/);
      await source.close();
    });

    test('proxy credentials from the proxy URL; a refusal and an unreachable proxy are errors that name the proxy, not the secret', async () => {
      const ref = `docker://${NAME}:${reg.port}/app:latest`;
      // Both variables: the client tries https first, then plain http (an insecure registry).
      const both = (url: string): NodeJS.ProcessEnv => ({ HTTP_PROXY: url, HTTPS_PROXY: url });
      const withCreds = `http://pxuser:px-secret-77@127.0.0.1:${authProxy.port}`;
      assert.equal(await pull(ref, both(withCreds), 'auth'), expected.manifest_digest);
      assert.ok(authProxy.connects.some((c) => c.status === 200));

      await assert.rejects(pull(ref, both(`http://pxuser:wrong-secret@127.0.0.1:${authProxy.port}`), 'auth-wrong'), (e: Error) => {
        assert.match(e.message, new RegExp(`proxy http://127\\.0\\.0\\.1:${authProxy.port} refused the tunnel \\(HTTP 407\\): it wants credentials`));
        assert.ok(!e.message.includes('wrong-secret'), e.message);
        return true;
      });
      const closed = await startConnectProxy({ hosts: {} });
      await closed.close();
      await assert.rejects(pull(ref, both(closed.url), 'down'), new RegExp(`cannot reach proxy http://127\\.0\\.0\\.1:${closed.port} \\(ECONNREFUSED\\)`));
    });

    test('tocfs inspect reads the proxy from its environment', async () => {
      const env = { HTTP_PROXY: proxy.url, NO_PROXY: 'unrelated.example', REGISTRY_AUTH_FILE: join(tmp, 'none.json'), CONTAINERS_REGISTRIES_CONF: join(tmp, 'none.conf'), TOCFS_CERTS_DIR: join(tmp, 'certs.d') };
      const r = await runCli(['inspect', '--json', '--tls-verify=false', ...testImage.platformArgs, `docker://${NAME}:${reg.port}/app`], { env });
      assert.equal(r.code, 0, r.stderr.toString());
      assert.equal(JSON.parse(r.stdout.toString()).manifestDigest, expected.manifest_digest);
    });
  });
}
