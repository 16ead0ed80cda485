/** The registry client's parsers and lookups: references, registries.conf, auth files, challenges, retry headers. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { formatReference, parseReference, type DockerReference } from '../src/reference.js';
import { authFilePaths, findCredentials } from '../src/registry/auth-file.js';
import { parseChallenges } from '../src/registry/challenge.js';
import { parseContentRange } from '../src/registry/endpoint.js';
import { DEFAULT_RETRY } from '../src/registry/options.js';
import { loadRegistriesConf, pullSources, registriesConfPaths } from '../src/registry/registries-conf.js';
import { backoffMs, parseRetryAfter } from '../src/registry/retry.js';
import { writeAuthFile } from './helpers/registry-env.js';

const docker = (s: string): DockerReference => parseReference(s) as DockerReference;

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-regconf-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('docker references', () => {
  const D = 'sha256:' + 'ab'.repeat(32);
  for (const [input, want] of [
    ['alpine', 'docker://docker.io/library/alpine:latest'],
    ['docker://alpine:3.19', 'docker://docker.io/library/alpine:3.19'],
    ['library/alpine', 'docker://docker.io/library/alpine:latest'],
    ['index.docker.io/alpine', 'docker://docker.io/library/alpine:latest'],
    ['registry-1.docker.io/user/app:v1', 'docker://docker.io/user/app:v1'],
    ['user/app', 'docker://docker.io/user/app:latest'],
    ['localhost/app', 'docker://localhost/app:latest'],
    ['localhost:5000/a/b:tag@' + D, `docker://localhost:5000/a/b:tag@${D}`],
    ['127.0.0.1:5000/app@' + D, `docker://127.0.0.1:5000/app@${D}`],
    ['quay.io/ns/repo-name_x.y:1.0-rc', 'docker://quay.io/ns/repo-name_x.y:1.0-rc'],
    ['[::1]:5000/app', 'docker://[::1]:5000/app:latest'],
  ] as const) {
    test(`${input} → ${want}`, () => assert.equal(formatReference(parseReference(input)), want));
  }
  for (const [input, why] of [
    ['Alpine', /invalid repository name component "Alpine"/],
    ['app@sha256:12', /bad digest/],
    ['app:', /bad tag/],
    ['docker-daemon:app', /unsupported transport/],
  ] as const) {
    test(`${input} is refused`, () => assert.throws(() => parseReference(input), why));
  }
});

describe('registries.conf', () => {
  test('v2 entries, drop-ins in order, longest prefix, wildcards, mirrors and their filters', async () => {
    const dir = join(tmp, 'conf1');
    await mkdir(join(dir, 'd'), { recursive: true });
    await writeFile(
      join(dir, 'registries.conf'),
      `unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5000/hub"
insecure = true
[[registry.mirror]]
location = "digests.local/hub"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "example.com/team"
location = "internal.example:5000/mirrored"
insecure = true

[[registry]]
prefix = "*.corp.example"
blocked = true

[aliases]
"foo" = "quay.io/foo/bar"
`,
    );
    await writeFile(join(dir, 'd', '10-old.conf'), '[[registry]]\nlocation = "old.example"\nblocked = true\n');
    await writeFile(join(dir, 'd', '20-new.conf'), '[[registry]]\nlocation = "old.example"\ninsecure = true\n');
    await writeFile(join(dir, 'd', 'ignored.txt'), 'not toml at all [[[');
    const conf = await loadRegistriesConf({ file: join(dir, 'registries.conf'), dirs: [join(dir, 'd')] });
    assert.deepEqual(conf.files, [join(dir, 'registries.conf'), join(dir, 'd', '10-old.conf'), join(dir, 'd', '20-new.conf')]);

    assert.deepEqual(pullSources(conf, docker('alpine')), [
      { registry: 'mirror.local:5000', repository: 'hub/library/alpine', insecure: true, mirror: true },
      { registry: 'docker.io', repository: 'library/alpine', insecure: false, mirror: false },
    ]);
    assert.deepEqual(
      pullSources(conf, docker('alpine@sha256:' + '0'.repeat(64))).map((s) => `${s.registry}/${s.repository}`),
      ['mirror.local:5000/hub/library/alpine', 'digests.local/hub/library/alpine', 'docker.io/library/alpine'],
    );
    assert.deepEqual(pullSources(conf, docker('example.com/team/app:1')), [{ registry: 'internal.example:5000', repository: 'mirrored/app', insecure: true, mirror: false }]);
    // "example.com/teammate" is not under the prefix "example.com/team".
    assert.deepEqual(pullSources(conf, docker('example.com/teammate/app')), [{ registry: 'example.com', repository: 'teammate/app', insecure: false, mirror: false }]);
    assert.throws(() => pullSources(conf, docker('reg.corp.example/app')), /registry reg.corp.example is blocked by the entry for "\*.corp.example"/);
    // The later drop-in replaced the entry for the same prefix.
    assert.deepEqual(pullSources(conf, docker('old.example/app')), [{ registry: 'old.example', repository: 'app', insecure: true, mirror: false }]);
  });

  test('mirror-by-digest-only, v1 tables, and errors that name the file', async () => {
    const dir = join(tmp, 'conf2');
    await mkdir(dir, { recursive: true });
    const v2 = join(dir, 'v2.conf');
    await writeFile(v2, '[[registry]]\nlocation = "r.example"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m.example"\n');
    const conf = await loadRegistriesConf({ file: v2, dirs: [] });
    assert.deepEqual(pullSources(conf, docker('r.example/a:tag')).map((s) => s.registry), ['r.example']);
    assert.deepEqual(pullSources(conf, docker('r.example/a@sha256:' + '1'.repeat(64))).map((s) => s.registry), ['m.example', 'r.example']);

    const v1 = join(dir, 'v1.conf');
    await writeFile(v1, "[registries.search]\nregistries = ['docker.io']\n[registries.insecure]\nregistries = ['plain:5000']\n[registries.block]\nregistries = ['bad.example']\n");
    const c1 = await loadRegistriesConf({ file: v1, dirs: [] });
    assert.equal(pullSources(c1, docker('plain:5000/x'))[0]!.insecure, true);
    assert.throws(() => pullSources(c1, docker('bad.example/x')), /blocked/);

    const broken = join(dir, 'broken.conf');
    await writeFile(broken, '[[registry]\nlocation = ');
    await assert.rejects(loadRegistriesConf({ file: broken, dirs: [] }), new RegExp(`^SourceError: ${broken}: invalid TOML`));
    await writeFile(broken, '[[registry]]\nlocation = "x.example"\ninsecure = "yes"\n');
    await assert.rejects(loadRegistriesConf({ file: broken, dirs: [] }), /\[\[registry\]\] #1 insecure: expected true or false/);
    assert.deepEqual((await loadRegistriesConf({ file: join(dir, 'missing.conf'), dirs: [join(dir, 'nodir')] })).registries, []);
  });

  test('file locations follow Podman: CONTAINERS_REGISTRIES_CONF, then the user file, then /etc', async () => {
    const home = join(tmp, 'home');
    assert.deepEqual(registriesConfPaths({}, {}, home), { file: '/etc/containers/registries.conf', dirs: ['/etc/containers/registries.conf.d', join(home, '.config/containers/registries.conf.d')] });
    assert.equal(registriesConfPaths({}, { CONTAINERS_REGISTRIES_CONF: '/x.conf' }, home).file, '/x.conf');
    assert.deepEqual(registriesConfPaths({ registriesConf: '/y.conf', registriesConfDir: '/d' }, { CONTAINERS_REGISTRIES_CONF: '/x.conf' }, home), { file: '/y.conf', dirs: ['/d'] });
    await mkdir(join(home, '.config/containers'), { recursive: true });
    await writeFile(join(home, '.config/containers/registries.conf'), '');
    assert.deepEqual(registriesConfPaths({}, {}, home), { file: join(home, '.config/containers/registries.conf'), dirs: [join(home, '.config/containers/registries.conf.d')] });
  });
});

describe('auth files', () => {
  test('locations: REGISTRY_AUTH_FILE alone, else the containers and Docker files in order', () => {
    assert.deepEqual(authFilePaths(undefined, { REGISTRY_AUTH_FILE: '/a.json', XDG_RUNTIME_DIR: '/run/user/1' }, '/home/u'), ['/a.json']);
    assert.deepEqual(authFilePaths('/explicit.json', { REGISTRY_AUTH_FILE: '/a.json' }, '/home/u'), ['/explicit.json']);
    assert.deepEqual(authFilePaths(undefined, { XDG_RUNTIME_DIR: '/run/user/1' }, '/home/u'), [
      '/run/user/1/containers/auth.json',
      '/home/u/.config/containers/auth.json',
      '/home/u/.docker/config.json',
    ]);
    assert.deepEqual(authFilePaths(undefined, { XDG_CONFIG_HOME: '/cfg', DOCKER_CONFIG: '/dk' }, '/home/u'), [
      `/run/containers/${process.getuid!()}/auth.json`,
      '/cfg/containers/auth.json',
      '/dk/config.json',
    ]);
  });

  test('lookup: first file with a match, most specific key, Docker Hub URL keys', async () => {
    const a = join(tmp, 'a.json');
    const b = join(tmp, 'b.json');
    await writeAuthFile(a, { 'quay.io/team': { username: 'team', password: 't' }, 'quay.io': { username: 'any', password: 'q' } });
    await writeAuthFile(b, { 'https://index.docker.io/v1/': { username: 'hub', password: 'h' }, 'ghcr.io': { identitytoken: 'itok' }, 'quay.io': { username: 'later', password: 'x' } });
    const missing = join(tmp, 'missing.json');
    const files = [missing, a, b];
    assert.equal((await findCredentials(files, 'quay.io', 'team/app'))!.username, 'team');
    assert.equal((await findCredentials(files, 'quay.io', 'other/app'))!.username, 'any');
    const hub = await findCredentials(files, 'docker.io', 'library/alpine');
    assert.deepEqual(hub, { username: 'hub', password: 'h', source: `${b} (https://index.docker.io/v1/)` });
    assert.deepEqual(await findCredentials(files, 'ghcr.io', 'x/y'), { username: '', password: '', identityToken: 'itok', source: `${b} (ghcr.io)` });
    assert.equal(await findCredentials(files, 'example.com', 'x'), undefined);

    const bad = join(tmp, 'bad.json');
    await writeFile(bad, '{"auths": {"x": {"auth": "c2VjcmV0LXZhbHVl"}'); // truncated JSON holding a secret
    await assert.rejects(findCredentials([bad], 'x', 'y'), (e: Error) => e.message === `auth file ${bad} is not valid JSON`);
  });
});

describe('headers', () => {
  test('WWW-Authenticate challenges', () => {
    assert.deepEqual(parseChallenges('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'), [
      { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push' } },
    ]);
    assert.deepEqual(parseChallenges('Basic realm="Registry Realm", Bearer realm=x, error="invalid_token"'), [
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
      { scheme: 'bearer', params: { realm: 'x', error: 'invalid_token' } },
    ]);
    assert.deepEqual(parseChallenges('Basic realm="a \\"quoted\\" realm"'), [{ scheme: 'basic', params: { realm: 'a "quoted" realm' } }]);
    assert.deepEqual(parseChallenges(undefined), []);
  });

  test('Retry-After, Content-Range, backoff bounds', () => {
    assert.equal(parseRetryAfter('3'), 3000);
    assert.equal(parseRetryAfter(new Date(Date.UTC(2030, 0, 1, 0, 0, 10)).toUTCString(), Date.UTC(2030, 0, 1)), 10_000);
    assert.equal(parseRetryAfter('soon'), undefined);
    assert.deepEqual(parseContentRange('bytes 10-19/100'), { start: 10, end: 19, total: 100 });
    assert.deepEqual(parseContentRange('bytes 0-0/*'), { start: 0, end: 0 });
    assert.equal(parseContentRange('bytes */100'), undefined);
    for (let n = 0; n < 10; n++) {
      const d = backoffMs(DEFAULT_RETRY, n);
      assert.ok(d >= 0 && d <= Math.min(DEFAULT_RETRY.maxDelayMs, DEFAULT_RETRY.baseDelayMs * 2 ** n));
    }
    assert.equal(backoffMs({ ...DEFAULT_RETRY, maxDelayMs: 0 }, 3, 2000), 2000);
    assert.equal(backoffMs({ ...DEFAULT_RETRY, maxDelayMs: 0, maxRetryAfterMs: 500 }, 3, 2000), 500);
  });
});
