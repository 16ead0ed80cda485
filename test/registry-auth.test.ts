/**
 * Registry authentication against a real docker-registry: htpasswd (Basic) and token (Bearer)
 * modes. Each suite runs on an image tocfs builds (never skipped) and on a corpus image (skipped
 * without the corpus).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { openImageSource, type SourceOptions } from '../src/image/open.js';
import { logger, REDACT_PATHS, setLogger } from '../src/log.js';
import { findCredentials } from '../src/registry/auth-file.js';
import type { ImageSource } from '../src/source/types.js';
import { seededContent } from './helpers/images.js';
import { selfSigned, type CertPair } from './helpers/registry-certs.js';
import { isolatedRegistryOptions, withEnv, writeAuthFile } from './helpers/registry-env.js';
import { MANIFEST_PATH, startFaultProxy } from './helpers/registry-fault-proxy.js';
import { startTokenIssuer, type TokenIssuer } from './helpers/registry-token-issuer.js';
import { freePort, startRegistry, type TestRegistry } from './helpers/registry.js';
import { builtTestImage, corpusTestImage, type TestImage } from './helpers/test-images.js';

const IMAGES: TestImage[] = [
  /** Two zstd:chunked layers. */
  builtTestImage('regauth', [
    [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=1\n' }, { path: 'data', type: 'dir' }, { path: 'data/blob.bin', content: seededContent('regauth-blob', 200_000) }],
    [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=2\n' }],
  ]),
  corpusTestImage('zstdchunked-skopeo118-layers'),
];

/** Resolves and reads a byte range of every layer, comparing with the oci: layout. */
async function pullAndCompare(image: TestImage, remote: ImageSource): Promise<void> {
  const local = await openImageSource(`oci:${await image.dir()}`);
  const want = await local.resolve(image.resolveOptions);
  const got = await remote.resolve(image.resolveOptions);
  assert.equal(got.manifestDigest, want.manifestDigest);
  assert.ok(got.configBytes.equals(want.configBytes));
  if (image.layerCount !== undefined) assert.equal(got.layers.length, image.layerCount);
  await Promise.all(
    got.layers.map(async (l) => {
      const len = Math.min(l.size, 4096);
      assert.ok((await remote.blob(l).read(l.size - len, len)).equals(await local.blob(l).read(l.size - len, len)));
    }),
  );
  await local.close();
}

/** Collects every log line the client writes at debug level. */
function captureLogs(): { lines: string[]; restore(): void } {
  const lines: string[] = [];
  const previous = logger();
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  setLogger(pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, sink));
  return { lines, restore: () => setLogger(previous) };
}

/**
 * A docker-credential-NAME shell script in `dir`: it records the server name it was sent
 * (docker's client sends it without a newline) in `dir`/NAME.asked, then runs `body`.
 */
async function writeCredentialHelper(dir: string, name: string, body: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const script = `#!/bin/sh\n[ "$1" = get ] || { echo "unexpected command $1" >&2; exit 2; }\nserver=$(cat)\nprintf '%s\\n' "$server" >> "${join(dir, name)}.asked"\n${body}\n`;
  await writeFile(join(dir, `docker-credential-${name}`), script, { mode: 0o755 });
}

/** What the helper was asked for, one server name per call. */
async function askedOf(dir: string, name: string): Promise<string[]> {
  try {
    return (await readFile(join(dir, `${name}.asked`), 'utf8')).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

for (const testImage of IMAGES) {
  describe(`htpasswd (Basic) authentication, ${testImage.label}`, { skip: testImage.skip }, () => {
    const USER = 'alice';
    const PASSWORD = 'Pa55-w0rd-not-in-logs';
    let tmp: string;
    let reg: TestRegistry;
    const sources: ImageSource[] = [];
    const open = async (opts: SourceOptions): Promise<ImageSource> => {
      const s = await openImageSource(`docker://${reg.host}/private/app:latest`, opts);
      sources.push(s);
      return s;
    };

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'tocfs-regauth-'));
      const { stdout } = await promisify(execFile)('htpasswd', ['-Bbn', USER, PASSWORD]);
      await writeFile(join(tmp, 'htpasswd'), stdout);
      reg = await startRegistry({ extraConfig: `auth:\n  htpasswd:\n    realm: tocfs-test\n    path: ${join(tmp, 'htpasswd')}\n` });
      await reg.load(await testImage.dir(), 'private/app');
    });
    after(async () => {
      await Promise.all(sources.map((s) => s.close()));
      await reg?.stop();
      await rm(tmp, { recursive: true, force: true });
    });

    test('credentials from the auth.json named by REGISTRY_AUTH_FILE', async () => {
      const authFile = join(tmp, 'env-auth.json');
      await writeAuthFile(authFile, { [reg.host]: { username: USER, password: PASSWORD } });
      const { authFile: _none, ...base } = await isolatedRegistryOptions(join(tmp, 'env'));
      const logs = captureLogs();
      try {
        await withEnv('REGISTRY_AUTH_FILE', authFile, async () => pullAndCompare(testImage, await open({ tlsVerify: false, registry: base })));
      } finally {
        logs.restore();
      }
      const all = logs.lines.join('');
      assert.ok(!all.includes(PASSWORD) && !all.includes(Buffer.from(`${USER}:${PASSWORD}`).toString('base64')), 'no secret in the logs');
      // The registry challenged, then served ranges to the authenticated client.
      assert.ok(reg.log.some((l) => /"GET \/v2\/private\/app\/manifests\/latest HTTP\/1.1" 401 /.test(l)));
      assert.ok(reg.log.some((l) => /"GET \/v2\/private\/app\/blobs\/sha256:[0-9a-f]{64} HTTP\/1.1" 206 4096 /.test(l)));
    });

    test('auth.json keys: host/namespace and Docker\'s URL form', async () => {
      for (const key of [`${reg.host}/private`, `${reg.host}/private/app`, `http://${reg.host}/v1/`]) {
        const opts = await isolatedRegistryOptions(join(tmp, 'keys'));
        await writeAuthFile(opts.authFile!, { [key]: { username: USER, password: PASSWORD }, [`${reg.host}/other`]: { username: 'nobody', password: 'x' } });
        const s = await open({ tlsVerify: false, registry: opts });
        assert.equal((await s.resolve(testImage.resolveOptions)).layers.length > 0, true, key);
      }
    });

    test('no credentials: the error names the registry and the files looked at', async () => {
      const opts = await isolatedRegistryOptions(join(tmp, 'none'));
      await assert.rejects((await open({ tlsVerify: false, registry: opts })).resolve(), (e: Error) => {
        assert.match(e.message, new RegExp(`^${reg.host}: authentication required to pull private/app`));
        assert.ok(e.message.includes(opts.authFile!), e.message);
        assert.match(e.message, /podman login/);
        return true;
      });
    });

    describe('credential helpers (credHelpers, credsStore)', () => {
      let bin: string;
      const inPath = <T>(fn: () => Promise<T>): Promise<T> => withEnv('PATH', `${bin}:${process.env.PATH}`, fn);
      const ok = (user: string, secret: string): string => `printf '{"ServerURL":"%s","Username":"${user}","Secret":"${secret}"}' "$server"`;

      before(async () => {
        bin = join(tmp, 'helpers-bin');
        await writeCredentialHelper(bin, 'good', ok(USER, PASSWORD));
        await writeCredentialHelper(bin, 'store', ok(USER, PASSWORD));
        await writeCredentialHelper(bin, 'empty', 'echo "credentials not found in native keychain"; exit 1');
        await writeCredentialHelper(bin, 'locked', `echo "the keyring is locked" >&2; exit 3`);
        await writeCredentialHelper(bin, 'garbage', `echo "${PASSWORD} is not json"`);
      });

      test('credHelpers names the helper for the registry; it wins over auths in that file, and nothing secret is logged', async () => {
        const opts = await isolatedRegistryOptions(join(tmp, 'helper'));
        await writeFile(
          opts.authFile!,
          JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${USER}:wrong`).toString('base64') } }, credHelpers: { [reg.host]: 'good', 'other.example': 'locked' } }),
        );
        const logs = captureLogs();
        try {
          await inPath(async () => pullAndCompare(testImage, await open({ tlsVerify: false, registry: opts })));
        } finally {
          logs.restore();
        }
        assert.deepEqual(await askedOf(bin, 'good'), [reg.host], 'asked once, with the registry name on stdin');
        assert.deepEqual(await askedOf(bin, 'locked'), [], 'a helper for another registry is not run');
        const all = logs.lines.join('');
        assert.ok(!all.includes(PASSWORD) && !all.includes(Buffer.from(`${USER}:${PASSWORD}`).toString('base64')), 'no secret in the logs');
      });

      test('credsStore serves registries without an auths entry; an auths entry is used before it', async () => {
        const opts = await isolatedRegistryOptions(join(tmp, 'store'));
        await writeFile(opts.authFile!, JSON.stringify({ auths: { [reg.host]: {} }, credsStore: 'store' }));
        await inPath(async () => pullAndCompare(testImage, await open({ tlsVerify: false, registry: opts })));
        assert.deepEqual(await askedOf(bin, 'store'), [reg.host]);

        const withEntry = await isolatedRegistryOptions(join(tmp, 'store-entry'));
        await writeFile(withEntry.authFile!, JSON.stringify({ auths: { [`${reg.host}/private`]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } }, credsStore: 'locked' }));
        await inPath(async () => pullAndCompare(testImage, await open({ tlsVerify: false, registry: withEntry })));
        assert.deepEqual(await askedOf(bin, 'locked'), [], 'the store is not asked when auths has the credentials');
      });

      test('a helper with nothing for the registry: "authentication required", as with no credentials', async () => {
        const opts = await isolatedRegistryOptions(join(tmp, 'helper-empty'));
        await writeFile(opts.authFile!, JSON.stringify({ credHelpers: { [reg.host]: 'empty' } }));
        await inPath(async () =>
          assert.rejects((await open({ tlsVerify: false, registry: opts })).resolve(), (e: Error) => {
            assert.match(e.message, new RegExp(`^${reg.host}: authentication required to pull private/app`));
            return true;
          }),
        );
      });

      test('across files: a helper with nothing sends the search on to the next file; a failing one stops it', async () => {
        const dir = join(tmp, 'helper-files');
        await mkdir(dir, { recursive: true });
        const [first, second, third] = ['runtime.json', 'config.json', 'docker.json'].map((f) => join(dir, f)) as [string, string, string];
        await writeFile(first, JSON.stringify({ credHelpers: { [reg.host]: 'empty' }, auths: { [reg.host]: { auth: Buffer.from('ignored:x').toString('base64') } } }));
        await writeFile(second, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } } }));
        await writeFile(third, JSON.stringify({ credsStore: 'good' }));
        const found = await inPath(() => findCredentials([first, second, third], reg.host, 'private/app'));
        assert.deepEqual(found, { username: USER, password: PASSWORD, source: `${second} (${reg.host})` });
        const fromStore = await inPath(() => findCredentials([first, third], reg.host, 'private/app'));
        assert.deepEqual(fromStore, { username: USER, password: PASSWORD, source: `docker-credential-good (credsStore in ${third})` });
        await writeFile(first, JSON.stringify({ credHelpers: { [reg.host]: 'locked' } }));
        await assert.rejects(inPath(() => findCredentials([first, second], reg.host, 'private/app')), /docker-credential-locked .* failed/);
      });

      test('registries.conf credential-helpers: each in order, the auth files as "containers-auth.json"; a failing one is passed over', async () => {
        const run = async (dir: string, helpers: string, auth: object | undefined): Promise<ImageSource> => {
          const opts = await isolatedRegistryOptions(join(tmp, dir));
          await writeFile(opts.registriesConf!, `credential-helpers = ${helpers}\n`);
          if (auth) await writeFile(opts.authFile!, JSON.stringify(auth));
          return open({ tlsVerify: false, registry: opts });
        };
        const wrongFile = { auths: { [reg.host]: { auth: Buffer.from(`${USER}:wrong`).toString('base64') } } };
        const goodFile = { auths: { [reg.host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } } };
        await writeCredentialHelper(bin, 'global', ok(USER, PASSWORD));

        // The global helper first: the auth file (with a wrong password) is never read.
        await inPath(async () => pullAndCompare(testImage, await run('global-first', '["global", "containers-auth.json"]', wrongFile)));
        assert.deepEqual(await askedOf(bin, 'global'), [reg.host]);
        // A failing helper, then the auth files: the auth files answer.
        await inPath(async () => pullAndCompare(testImage, await run('locked-first', '["locked", "containers-auth.json"]', goodFile)));
        // Only a helper with nothing: no credentials, and the error says where it looked.
        await inPath(async () =>
          assert.rejects((await run('empty-only', '["empty"]', goodFile)).resolve(), (e: Error) => {
            assert.match(e.message, new RegExp(`^${reg.host}: authentication required to pull private/app.*no credentials for ${reg.host} were found in docker-credential-empty;`));
            return true;
          }),
        );
        // Every one failing: each error, naming its helper.
        await inPath(async () =>
          assert.rejects((await run('all-fail', '["locked", "absent"]', undefined)).resolve(), /no credentials for 127\.0\.0\.1:\d+: credential helper docker-credential-locked .*exit code 3.*; credential helper docker-credential-absent .*not installed/),
        );
        const bad = await isolatedRegistryOptions(join(tmp, 'bad-list'));
        await writeFile(bad.registriesConf!, 'credential-helpers = "secretservice"\n');
        await assert.rejects((await open({ tlsVerify: false, registry: bad })).resolve(), new RegExp(`${bad.registriesConf}: credential-helpers must be a list of helper names`));
      });

      test('a failing, missing or garbled helper: an error naming the helper and the file, never the secret', async () => {
        const cases: Array<[string, string, RegExp]> = [
          ['locked', 'credHelpers', /credential helper docker-credential-locked \(credHelpers\["[^"]+"\] in [^)]+\) failed for 127\.0\.0\.1:\d+: exit code 3: the keyring is locked/],
          ['absent', 'credsStore', /credential helper docker-credential-absent \(credsStore in [^)]+\) is not installed \(not found on PATH\)/],
          ['garbage', 'credHelpers', /credential helper docker-credential-garbage \(.*\) printed something that is not JSON for 127\.0\.0\.1:\d+$/],
          ['../evil', 'credsStore', /credential helper name "\.\.\/evil" is not valid/],
        ];
        for (const [name, field, want] of cases) {
          const opts = await isolatedRegistryOptions(join(tmp, `helper-bad-${field}`));
          await writeFile(opts.authFile!, JSON.stringify(field === 'credsStore' ? { credsStore: name } : { credHelpers: { [reg.host]: name } }));
          await inPath(async () =>
            assert.rejects((await open({ tlsVerify: false, registry: opts })).resolve(), (e: Error) => {
              assert.match(e.message, want);
              if (!name.includes('/')) assert.ok(e.message.includes(opts.authFile!), e.message);
              assert.ok(!e.message.includes(PASSWORD), e.message);
              return true;
            }),
          );
        }
      });
    });

    test('a wrong password: denied, naming the user and the file but not the secret', async () => {
      const opts = await isolatedRegistryOptions(join(tmp, 'wrong'));
      const wrong = 'wrong-secret-123';
      await writeAuthFile(opts.authFile!, { [reg.host]: { username: USER, password: wrong } });
      await assert.rejects((await open({ tlsVerify: false, registry: opts })).resolve(), (e: Error) => {
        assert.match(e.message, new RegExp(`${reg.host}: .*denied for user "${USER}" from ${opts.authFile}`));
        assert.ok(!e.message.includes(wrong) && !e.message.includes(Buffer.from(`${USER}:${wrong}`).toString('base64')), e.message);
        return true;
      });
    });
  });

  describe(`token (Bearer) authentication, ${testImage.label}`, { skip: testImage.skip }, () => {
    const SERVICE = 'tocfs-test-registry';
    const ISSUER = 'tocfs-test-issuer';
    let tmp: string;
    let keyA: CertPair;
    let keyB: CertPair;
    const stops: Array<() => Promise<void>> = [];

    async function tokenRegistry(issuer: TokenIssuer, bundle: CertPair, root: string, port?: number): Promise<TestRegistry> {
      await mkdir(root, { recursive: true });
      const reg = await startRegistry({
        root,
        ...(port ? { port } : {}),
        extraConfig: `auth:\n  token:\n    realm: ${issuer.realm}\n    service: ${SERVICE}\n    issuer: ${ISSUER}\n    rootcertbundle: ${bundle.cert}\n`,
      });
      stops.push(() => reg.stop());
      return reg;
    }

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'tocfs-regtoken-'));
      keyA = await selfSigned(tmp, 'signing-a');
      keyB = await selfSigned(tmp, 'signing-b');
    });
    after(async () => {
      for (const s of stops.reverse()) await s();
      await rm(tmp, { recursive: true, force: true });
    });

    test('anonymous token from the challenge, fetched once and reused; refreshed after a 401', async () => {
      const issuer = await startTokenIssuer({ signing: keyA, issuer: ISSUER, service: SERVICE });
      stops.push(() => issuer.close());
      const root = join(tmp, 'anon-root');
      const port = await freePort();
      let reg = await tokenRegistry(issuer, keyA, root, port);
      await reg.load(await testImage.dir(), 'app');
      const source = await openImageSource(`docker://${reg.host}/app:latest`, { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'anon')) });
      stops.push(() => source.close());
      await pullAndCompare(testImage, source);
      const image = await source.resolve(testImage.resolveOptions);
      await Promise.all(image.layers.flatMap((l) => [0, 1, 2, 3].map((i) => source.blob(l).read(Math.floor((l.size * i) / 5), 100))));
      assert.equal(issuer.requests.length, 1, 'one token for every request');
      assert.deepEqual(issuer.requests[0], { method: 'GET', scope: ['repository:app:pull'], service: SERVICE });

      // The registry restarts trusting another key: the cached token is refused (401) and replaced.
      await reg.stop();
      await issuer.useKey(keyB);
      reg = await tokenRegistry(issuer, keyB, root, port);
      const l = image.layers[0]!;
      assert.equal((await source.blob(l).read(0, 64)).length, 64);
      assert.equal(issuer.requests.length, 2);
    });

    test('refused even with a token (Docker Hub\'s answer for a missing repository): the error says so', async () => {
      const issuer = await startTokenIssuer({ signing: keyA, issuer: ISSUER, service: SERVICE });
      stops.push(() => issuer.close());
      const reg = await tokenRegistry(issuer, keyA, join(tmp, 'missing-root'));
      const proxy = await startFaultProxy(reg.host);
      stops.push(() => proxy.close());
      const challenge = `Bearer realm="${issuer.realm}",service="${SERVICE}",scope="repository:nosuch/app:pull"`;
      proxy.inject({ kind: 'status', status: 401, headers: { 'www-authenticate': challenge }, body: '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}' }, { times: 2, match: MANIFEST_PATH });
      const opts = await isolatedRegistryOptions(join(tmp, 'missing'));
      const source = await openImageSource(`docker://${proxy.host}/nosuch/app:latest`, { tlsVerify: false, registry: opts });
      stops.push(() => source.close());
      await assert.rejects(source.resolve(), (e: Error) => {
        assert.equal(
          e.message,
          `${proxy.host}: repository nosuch/app does not exist or needs authentication (UNAUTHORIZED: authentication required); no credentials for ${proxy.host} were found in ${opts.authFile} (log in with "podman login ${proxy.host}" if it is private)`,
        );
        return true;
      });
      assert.equal(issuer.requests.length, 1);
    });

    test('a token is fetched again once its expires_in has passed', async () => {
      const issuer = await startTokenIssuer({ signing: keyA, issuer: ISSUER, service: SERVICE, expiresIn: 1 });
      stops.push(() => issuer.close());
      const reg = await tokenRegistry(issuer, keyA, join(tmp, 'expiry-root'));
      await reg.load(await testImage.dir(), 'app');
      const source = await openImageSource(`docker://${reg.host}/app:latest`, { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'expiry')) });
      stops.push(() => source.close());
      const image = await source.resolve(testImage.resolveOptions);
      await source.blob(image.layers[0]!).read(0, 10);
      assert.equal(issuer.requests.length, 1);
      await new Promise((r) => setTimeout(r, 1100));
      await source.blob(image.layers[0]!).read(10, 10);
      assert.equal(issuer.requests.length, 2);
    });

    test('credentials to the realm (Basic) and identity tokens (OAuth2 refresh)', async () => {
      const issuer = await startTokenIssuer({ signing: keyA, issuer: ISSUER, service: SERVICE, users: { bob: 'b0b-secret' }, refreshTokens: ['refresh-abc'] });
      stops.push(() => issuer.close());
      const reg = await tokenRegistry(issuer, keyA, join(tmp, 'creds-root'));
      await reg.load(await testImage.dir(), 'team/app');
      const ref = `docker://${reg.host}/team/app:latest`;

      const withPassword = await isolatedRegistryOptions(join(tmp, 'pw'));
      await writeAuthFile(withPassword.authFile!, { [reg.host]: { username: 'bob', password: 'b0b-secret' } });
      const s1 = await openImageSource(ref, { tlsVerify: false, registry: withPassword });
      stops.push(() => s1.close());
      await pullAndCompare(testImage, s1);
      assert.equal(issuer.requests.at(-1)!.user, 'bob');

      const withToken = await isolatedRegistryOptions(join(tmp, 'idtoken'));
      await writeAuthFile(withToken.authFile!, { [reg.host]: { identitytoken: 'refresh-abc' } });
      const s2 = await openImageSource(ref, { tlsVerify: false, registry: withToken });
      stops.push(() => s2.close());
      await pullAndCompare(testImage, s2);
      assert.deepEqual(issuer.requests.at(-1), { method: 'POST', scope: ['repository:team/app:pull'], service: SERVICE, grantType: 'refresh_token', user: 'refresh-token-user' });

      // The same identity token from a credential helper (Username "<token>").
      const bin = join(tmp, 'token-helper-bin');
      await writeCredentialHelper(bin, 'tok', `printf '{"ServerURL":"%s","Username":"<token>","Secret":"refresh-abc"}' "$server"`);
      const viaHelper = await isolatedRegistryOptions(join(tmp, 'idtoken-helper'));
      await writeFile(viaHelper.authFile!, JSON.stringify({ credHelpers: { [reg.host]: 'tok' } }));
      const before = issuer.requests.length;
      await withEnv('PATH', `${bin}:${process.env.PATH}`, async () => {
        const s4 = await openImageSource(ref, { tlsVerify: false, registry: viaHelper });
        stops.push(() => s4.close());
        await pullAndCompare(testImage, s4);
      });
      assert.deepEqual(issuer.requests.slice(before), [{ method: 'POST', scope: ['repository:team/app:pull'], service: SERVICE, grantType: 'refresh_token', user: 'refresh-token-user' }]);

      const anonymous = await isolatedRegistryOptions(join(tmp, 'anon2'));
      const s3 = await openImageSource(ref, { tlsVerify: false, registry: anonymous });
      stops.push(() => s3.close());
      await assert.rejects(s3.resolve(), (e: Error) => {
        assert.match(e.message, new RegExp(`^${reg.host}: authentication required to pull team/app \\(token server 127.0.0.1:\\d+ answered 401\\).*${anonymous.authFile}`));
        return true;
      });
    });
  });
}
