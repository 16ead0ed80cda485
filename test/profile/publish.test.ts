/**
 * Start-up profiles shared through the registry, against a real docker-registry 2.8 (no
 * referrers API: the referrers tag schema) on loopback: push, discovery, the requests a lookup
 * costs (counted in the registry's access log), hostile published profiles, push rights, and
 * `tocfs profile push`. The referrers API, which that registry lacks, is checked through a
 * small proxy in front of it that answers the referrers endpoint and sets OCI-Subject.
 */
import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino, type Logger } from 'pino';
import { digestHex, sha256 } from '../../src/digest.js';
import { MAX_PROFILE_BYTES, PROFILE_MEDIA_TYPE, serializeProfile, type Profile } from '../../src/profile/profile.js';
import { findPublishedProfile, pushProfile } from '../../src/profile/publish.js';
import { referrersTag } from '../../src/registry/referrers.js';
import { ProfileStore } from '../../src/profile/store.js';
import { parseReference, type DockerReference } from '../../src/reference.js';
import { pushBlob, pushManifest } from '../../src/registry/distribution.js';
import type { SourceOptions } from '../../src/registry/options.js';
import { RegistrySource } from '../../src/registry/source.js';
import { runCli } from '../helpers/cli.js';
import { buildImage, type BuiltImage } from '../helpers/images.js';
import { selfSigned } from '../helpers/registry-certs.js';
import { isolatedCliEnv, isolatedRegistryOptions } from '../helpers/registry-env.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { startTokenIssuer } from '../helpers/registry-token-issuer.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const EMPTY_DIGEST = sha256(Buffer.from('{}'));

function capturingLog(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  return { log: pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}

function profileOf(img: BuiltImage, reference: string, files: string[]): Profile {
  const ref = parseReference(reference) as DockerReference;
  return {
    schemaVersion: 1,
    mediaType: PROFILE_MEDIA_TYPE,
    created: new Date().toISOString(),
    image: { reference, repository: `${ref.registry}/${ref.repository}`, manifestDigest: img.manifestDigest },
    recording: { idleMs: 10_000, windowMs: 120_000, endedBy: 'idle' },
    layers: img.layers.map((l) => ({ digest: l.digest })),
    reads: files.map((path, i) => ({ layer: 0, path, offset: 0, length: 100, atMs: i * 7 })),
  };
}

function imageKey(img: BuiltImage, reference: string): Parameters<typeof findPublishedProfile>[0] {
  const ref = parseReference(reference) as DockerReference;
  return { reference, manifestDigest: img.manifestDigest, repository: `${ref.registry}/${ref.repository}`, layerDigests: img.layers.map((l) => l.digest) };
}

/** tocfs's requests in a registry's access log (it arrives on a pipe: waits until it stops growing). */
async function settledRequests(reg: TestRegistry): Promise<string[]> {
  const api = (): string[] => reg.log.map((l) => /"((?:GET|HEAD|POST|PUT|PATCH|DELETE) \/v2\/\S*) HTTP\/[\d.]+" .*"tocfs"$/.exec(l)?.[1]).filter((l): l is string => l !== undefined);
  let n = -1;
  while (api().length !== n) {
    n = api().length;
    await new Promise((r) => setTimeout(r, 150));
  }
  return api();
}

/** The requests `fn` makes, from the registry's access log. */
async function requestsOf(reg: TestRegistry, fn: () => Promise<unknown>): Promise<string[]> {
  const before = (await settledRequests(reg)).length;
  await fn();
  return (await settledRequests(reg)).slice(before);
}

async function getJson(url: string, accept = OCI_INDEX): Promise<{ status: number; doc?: Record<string, unknown>; bytes?: Buffer }> {
  const res = await fetch(url, { headers: { accept } });
  if (res.status !== 200) return { status: res.status };
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: 200, doc: JSON.parse(bytes.toString()), bytes };
}

describe('start-up profiles published in a registry', () => {
  let tmp: string;
  let reg: TestRegistry;
  let img: BuiltImage;
  let other: BuiltImage;
  let opts: SourceOptions;
  const stops: Array<() => Promise<unknown>> = [];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-profile-publish-'));
    img = await buildImage(join(tmp, 'app'), { format: 'zstd:chunked', tag: 'v1', layers: [[{ path: 'etc/motd', content: 'hello\n' }, { path: 'app.py', content: 'print(1)\n' }]] });
    other = await buildImage(join(tmp, 'other'), { format: 'zstd:chunked', tag: 'v1', layers: [[{ path: 'etc/motd', content: 'other\n' }]] });
    reg = await startRegistry();
    stops.push(() => reg.stop());
    opts = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'client')) };
  });
  after(async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  });

  test('pushed through the referrers tag schema, found by a lookup; a second push keeps both and the newest wins', async () => {
    await reg.load(img.dir, 'app');
    const ref = `${reg.host}/app:v1`;
    const first = profileOf(img, ref, ['etc/motd']);
    const pushed = await pushProfile(ref, first, opts);
    const tag = referrersTag(img.manifestDigest);
    assert.equal(tag, `sha256-${digestHex(img.manifestDigest)}`);
    assert.ok(pushed.findable.by === 'tag');
    assert.equal(pushed.findable.tag, tag);
    assert.equal(pushed.findable.referrers, 1);

    // What the registry holds: the artifact manifest, and the index under the referrers tag.
    const subjectBytes = await readFile(join(img.dir, 'blobs', 'sha256', digestHex(img.manifestDigest)));
    const artifact = await getJson(`http://${reg.host}/v2/app/manifests/${pushed.manifestDigest}`, OCI_MANIFEST);
    assert.equal(sha256(artifact.bytes!), pushed.manifestDigest);
    const profileBytes = serializeProfile(first);
    assert.deepEqual(artifact.doc, {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: PROFILE_MEDIA_TYPE,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: EMPTY_DIGEST, size: 2 },
      layers: [{ mediaType: PROFILE_MEDIA_TYPE, digest: sha256(profileBytes), size: profileBytes.length }],
      subject: { mediaType: OCI_MANIFEST, digest: img.manifestDigest, size: subjectBytes.length },
      annotations: { 'org.opencontainers.image.created': (artifact.doc!.annotations as Record<string, string>)['org.opencontainers.image.created'] },
    });
    const index = await getJson(`http://${reg.host}/v2/app/manifests/${tag}`);
    assert.equal(index.status, 200);
    assert.equal(sha256(index.bytes!), pushed.findable.indexDigest);
    assert.deepEqual(index.doc, {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: pushed.manifestDigest, size: artifact.bytes!.length, artifactType: PROFILE_MEDIA_TYPE, annotations: (artifact.doc as { annotations: object }).annotations }],
    });
    console.log(`# artifact manifest: ${artifact.bytes!.toString()}\n# referrers index (${tag}): ${index.bytes!.toString()}`);

    const { log } = capturingLog();
    const found = await findPublishedProfile(imageKey(img, ref), opts, log);
    assert.ok(found);
    assert.deepEqual(found.profile, first);
    assert.equal(found.match, 'manifest');
    assert.equal(found.source, `registry ${reg.host}/app@${pushed.manifestDigest}`);

    await new Promise((r) => setTimeout(r, 5)); // a later creation time
    const second = profileOf(img, ref, ['app.py', 'etc/motd']);
    const again = await pushProfile(ref, second, opts);
    assert.equal(again.findable.by === 'tag' && again.findable.referrers, 2);
    const both = await getJson(`http://${reg.host}/v2/app/manifests/${tag}`);
    assert.deepEqual((both.doc!.manifests as Array<{ digest: string }>).map((m) => m.digest), [pushed.manifestDigest, again.manifestDigest]);
    const newest = await requestsOf(reg, async () => assert.deepEqual((await findPublishedProfile(imageKey(img, ref), opts, log))?.profile, second));
    console.log(`# lookup that finds a profile: ${newest.length} requests: ${newest.join(', ')}`);
    assert.deepEqual(newest.map((r) => r.split(' ')[0]), ['GET', 'GET', 'GET']);
    assert.match(newest[0]!, new RegExp(`/manifests/${tag}$`), 'the registry is known to lack the referrers API by now: straight to the tag');
  });

  test('nothing published: one request per lookup (the first one on a registry also learns it has no referrers API), none on the next lookup', async () => {
    const fresh = await startRegistry();
    stops.push(() => fresh.stop());
    await fresh.load(img.dir, 'quiet');
    await fresh.load(other.dir, 'quiet');
    const { log } = capturingLog();
    const a = imageKey(img, `${fresh.host}/quiet:v1`);
    const b = imageKey(other, `${fresh.host}/quiet:v2`);
    const first = await requestsOf(fresh, async () => assert.equal(await findPublishedProfile(a, opts, log), undefined));
    const second = await requestsOf(fresh, async () => assert.equal(await findPublishedProfile(b, opts, log), undefined));
    const repeated = await requestsOf(fresh, async () => {
      assert.equal(await findPublishedProfile(a, opts, log), undefined);
      assert.equal(await findPublishedProfile(b, opts, log), undefined);
    });
    console.log(`# no profile published: first lookup on a registry ${first.length} (${first.join(', ')}), next image ${second.length} (${second.join(', ')}), repeated lookups ${repeated.length}`);
    // The client's first request to a plain-HTTP registry is the scheme check (GET /v2/); the
    // referrers API's 404 is remembered for the registry.
    assert.deepEqual(first, ['GET /v2/', `GET /v2/quiet/referrers/${img.manifestDigest}?artifactType=${encodeURIComponent(PROFILE_MEDIA_TYPE)}`, `GET /v2/quiet/manifests/${referrersTag(img.manifestDigest)}`]);
    assert.deepEqual(second, [`GET /v2/quiet/manifests/${referrersTag(other.manifestDigest)}`]);
    assert.deepEqual(repeated, []);
  });

  test('with a pull mirror in registries.conf: the push goes to the image\'s own registry only; the lookup tries the mirror first, then the registry', async () => {
    const mirror = await startRegistry();
    stops.push(() => mirror.stop());
    await reg.load(img.dir, 'mirrored');
    await mirror.load(img.dir, 'mirrored');
    const dir = join(tmp, 'mirror-client');
    const withMirror: SourceOptions = { tlsVerify: false, registry: await isolatedRegistryOptions(dir) };
    await writeFile(join(dir, 'registries.conf'), `[[registry]]\nlocation = "${reg.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${mirror.host}"\ninsecure = true\n`);
    const ref = `${reg.host}/mirrored:v1`;
    const profile = profileOf(img, ref, ['etc/motd', 'mirrored']);
    const pushed = await pushProfile(ref, profile, withMirror);
    assert.equal(pushed.repository, `${reg.host}/mirrored`);
    assert.deepEqual(await settledRequests(mirror), [], 'the mirror is not written to (nor read)');
    const onMirror = await requestsOf(mirror, async () => assert.deepEqual((await findPublishedProfile(imageKey(img, ref), withMirror, capturingLog().log))?.profile, profile));
    assert.ok(onMirror.some((r) => r.includes(`/manifests/${referrersTag(img.manifestDigest)}`)), `the mirror was asked first: ${onMirror.join(', ')}`);
  });

  /** Publishes `profileBytes` as a profile of `subject` the way pushProfile does, but with whatever bytes a hostile publisher likes. */
  async function publishRaw(repo: string, subject: BuiltImage, profileBytes: Buffer): Promise<{ blob: string; manifest: string }> {
    const source = new RegistrySource(parseReference(`${reg.host}/${repo}:v1`) as DockerReference, opts);
    try {
      const ep = (await source.endpoints())[0]!;
      const subjectSize = (await readFile(join(subject.dir, 'blobs', 'sha256', digestHex(subject.manifestDigest)))).length;
      const blob = await pushBlob(ep, profileBytes);
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          artifactType: PROFILE_MEDIA_TYPE,
          config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: await pushBlob(ep, Buffer.from('{}')), size: 2 },
          layers: [{ mediaType: PROFILE_MEDIA_TYPE, digest: blob, size: profileBytes.length }],
          subject: { mediaType: OCI_MANIFEST, digest: subject.manifestDigest, size: subjectSize },
        }),
      );
      const m = await pushManifest(ep, sha256(manifest), OCI_MANIFEST, manifest);
      const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: m.digest, size: manifest.length, artifactType: PROFILE_MEDIA_TYPE }] };
      await pushManifest(ep, referrersTag(subject.manifestDigest), OCI_INDEX, Buffer.from(JSON.stringify(index)));
      return { blob, manifest: m.digest };
    } finally {
      await source.close();
    }
  }

  test('a hostile published profile (malformed JSON, oversized, wrong digest) is a warning naming it and no profile, remembered as a miss', async () => {
    const cases: Array<{ repo: string; publish: () => Promise<string>; reason: RegExp }> = [
      { repo: 'hostile-json', publish: async () => (await publishRaw('hostile-json', img, Buffer.from('{"schemaVersion": 1, "reads": ['))).blob, reason: /not JSON/ },
      { repo: 'hostile-big', publish: async () => (await publishRaw('hostile-big', img, Buffer.alloc(MAX_PROFILE_BYTES + 1, 0x20))).blob, reason: new RegExp(`${MAX_PROFILE_BYTES + 1} bytes, over the ${MAX_PROFILE_BYTES}-byte limit`) },
      {
        repo: 'hostile-digest',
        publish: async () => {
          // A valid profile pushed, then its bytes changed in the registry's storage (same size, other digest).
          const pushed = await pushProfile(`${reg.host}/hostile-digest:v1`, profileOf(img, `${reg.host}/hostile-digest:v1`, ['etc/motd', 'hostile-digest']), opts);
          const hex = digestHex(pushed.profileDigest);
          const data = join(reg.root, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
          const bytes = await readFile(data);
          await writeFile(data, Buffer.from(bytes.toString().replace('hostile-digest', 'hostile-DIGEST')));
          return pushed.profileDigest;
        },
        reason: /digest mismatch/,
      },
    ];
    for (const c of cases) {
      await reg.load(img.dir, c.repo);
      const blob = await c.publish();
      const { log, lines } = capturingLog();
      const key = imageKey(img, `${reg.host}/${c.repo}:v1`);
      const made = await requestsOf(reg, async () => assert.equal(await findPublishedProfile(key, opts, log), undefined, c.repo));
      const warning = lines.find((l) => l.msg === 'published start-up profile not used');
      assert.ok(warning, `${c.repo}: a warning`);
      assert.match(String(warning.reason), c.reason, c.repo);
      assert.match(String(warning.reason), new RegExp(`${reg.host}/${c.repo}`), `${c.repo}: the warning names where the profile is`);
      if (c.repo === 'hostile-big') assert.ok(!made.some((r) => r.includes(blob)), 'an oversized profile is not fetched');
      assert.deepEqual(await requestsOf(reg, () => findPublishedProfile(key, opts, log)), [], `${c.repo}: the next lookup asks nothing`);
    }
  });

  test('push without push rights: the error says to log in (a token server that grants pull only)', async () => {
    const SERVICE = 'tocfs-test-registry';
    const ISSUER = 'tocfs-test-issuer';
    const key = await selfSigned(tmp, 'token-signing');
    const issuer = await startTokenIssuer({ signing: key, issuer: ISSUER, service: SERVICE });
    stops.push(() => issuer.close());
    const locked = await startRegistry({ extraConfig: `auth:\n  token:\n    realm: ${issuer.realm}\n    service: ${SERVICE}\n    issuer: ${ISSUER}\n    rootcertbundle: ${key.cert}\n` });
    stops.push(() => locked.stop());
    await locked.load(img.dir, 'app');
    const ref = `${locked.host}/app:v1`;
    await assert.rejects(pushProfile(ref, profileOf(img, ref, ['etc/motd']), opts), (e: Error) => {
      assert.match(e.message, new RegExp(`^no push rights to ${locked.host}/app: log in with "podman login ${locked.host}"`));
      return true;
    });
    assert.ok(issuer.requests.some((r) => r.scope.includes('repository:app:pull,push')), 'asked for push rights');
    assert.ok(!(await settledRequests(locked)).some((r) => r.startsWith('PUT')), 'nothing written');
  });

  test('tocfs profile push: the stored profile of an image, or a file; a profile of another image is refused', async () => {
    await reg.load(img.dir, 'cli');
    await reg.load(other.dir, 'cli-other');
    const ref = `docker://${reg.host}/cli:v1`;
    const env = isolatedCliEnv(join(tmp, 'client'));
    const cacheDir = join(tmp, 'cli-cache');
    const stored = profileOf(img, ref, ['etc/motd', 'cli-stored']);
    await new ProfileStore(cacheDir, pino({ level: 'silent' })).save(stored);
    const r1 = await runCli(['profile', 'push', ref, '--cache-dir', cacheDir, '--tls-verify=false', '--json'], { env });
    assert.equal(r1.code, 0, r1.stderr);
    const out = JSON.parse(r1.stdout.toString());
    assert.equal(out.findable.by, 'tag');
    assert.equal(out.repository, `${reg.host}/cli`);
    const { log } = capturingLog();
    assert.deepEqual((await findPublishedProfile(imageKey(img, ref), opts, log))?.profile, stored);

    const file = join(tmp, 'other.profile.json');
    await writeFile(file, serializeProfile(profileOf(other, `docker://${reg.host}/cli-other:v1`, ['etc/motd'])));
    const r2 = await runCli(['profile', 'push', `docker://${reg.host}/cli-other:v1`, '--file', file, '--tls-verify=false'], { env });
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stdout.toString(), new RegExp(`^pushed the start-up profile of ${other.manifestDigest} \\(1 reads\\) to ${reg.host}/cli-other as sha256:[0-9a-f]{64}, found through the referrers tag ${referrersTag(other.manifestDigest)} \\(1 referrers\\)`));

    const r3 = await runCli(['profile', 'push', ref, '--file', file, '--tls-verify=false'], { env });
    assert.equal(r3.code, 1);
    assert.match(r3.stderr, new RegExp(`was recorded on ${other.manifestDigest}.*which is not ${ref.replace(/[.]/g, '\\.')}`));
    const r4 = await runCli(['profile', 'push', `docker://${reg.host}/cli-other:v1`, '--cache-dir', join(tmp, 'empty-cache'), '--tls-verify=false'], { env });
    assert.equal(r4.code, 1);
    assert.match(r4.stderr, /no start-up profile of .* --file/);
  });
});

interface ReferrersProxy {
  host: string;
  requests: string[];
  close(): Promise<void>;
}

/**
 * What docker-registry 2.8 lacks, in front of it: answers GET /v2/<name>/referrers/<digest>
 * (filtered by artifactType) from the manifests with a `subject` pushed through it, and sets
 * OCI-Subject on their PUT; everything else goes to the real registry.
 */
async function startReferrersProxy(upstream: TestRegistry): Promise<ReferrersProxy> {
  const referrers = new Map<string, Array<Record<string, unknown>>>();
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const url = req.url ?? '/';
      requests.push(`${req.method} ${url}`);
      const body = Buffer.concat(parts);
      const asked = /^\/v2\/(.+)\/referrers\/(sha256:[0-9a-f]{64})(?:\?.*)?$/.exec(url);
      if (asked && req.method === 'GET') {
        const want = new URL(url, 'http://x').searchParams.get('artifactType');
        const manifests = (referrers.get(`${asked[1]}@${asked[2]}`) ?? []).filter((d) => !want || d.artifactType === want);
        res.writeHead(200, { 'content-type': OCI_INDEX, ...(want ? { 'oci-filters-applied': 'artifactType' } : {}) });
        res.end(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
        return;
      }
      const up = request({ host: '127.0.0.1', port: upstream.port, method: req.method, path: url, headers: req.headers }, (ures) => {
        const headers = { ...ures.headers };
        const put = /^\/v2\/(.+)\/manifests\/[^/]+$/.exec(url);
        if (req.method === 'PUT' && put && ures.statusCode === 201) {
          const doc = JSON.parse(body.toString()) as { mediaType: string; artifactType?: string; subject?: { digest: string }; annotations?: object };
          if (doc.subject) {
            const key = `${put[1]}@${doc.subject.digest}`;
            referrers.set(key, [...(referrers.get(key) ?? []), { mediaType: doc.mediaType, digest: sha256(body), size: body.length, artifactType: doc.artifactType, ...(doc.annotations ? { annotations: doc.annotations } : {}) }]);
            headers['oci-subject'] = doc.subject.digest;
          }
        }
        res.writeHead(ures.statusCode ?? 502, headers);
        ures.pipe(res);
      });
      up.on('error', () => res.destroy());
      up.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    host: `127.0.0.1:${(server.address() as { port: number }).port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('start-up profiles on a registry with the referrers API (a proxy adds it to docker-registry)', () => {
  let tmp: string;
  let reg: TestRegistry;
  let proxy: ReferrersProxy;
  let img: BuiltImage;
  let img2: BuiltImage;
  let opts: SourceOptions;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-profile-referrers-'));
    img = await buildImage(join(tmp, 'app'), { format: 'zstd:chunked', tag: 'v1', layers: [[{ path: 'etc/motd', content: 'referrers\n' }]] });
    img2 = await buildImage(join(tmp, 'app2'), { format: 'zstd:chunked', tag: 'v2', layers: [[{ path: 'etc/motd', content: 'nothing published\n' }]] });
    reg = await startRegistry();
    await reg.load(img.dir, 'app');
    await reg.load(img2.dir, 'app');
    proxy = await startReferrersProxy(reg);
    opts = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'client')) };
  });
  after(async () => {
    await proxy?.close();
    await reg?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  test('push: OCI-Subject in the answer, so no referrers tag; lookup: the referrers API, filtered by artifactType, no tag', async () => {
    const ref = `${proxy.host}/app:v1`;
    const profile = profileOf(img, ref, ['etc/motd']);
    const pushed = await pushProfile(ref, profile, opts);
    assert.deepEqual(pushed.findable, { by: 'referrers-api' });
    assert.ok(!proxy.requests.some((r) => r.includes('/manifests/sha256-')), `no referrers tag read or written: ${proxy.requests.join(', ')}`);

    const mark = proxy.requests.length;
    const { log } = capturingLog();
    const found = await findPublishedProfile(imageKey(img, ref), opts, log);
    assert.deepEqual(found?.profile, profile);
    assert.equal(found?.source, `registry ${proxy.host}/app@${pushed.manifestDigest}`);
    const made = proxy.requests.slice(mark);
    console.log(`# referrers API lookup that finds a profile: ${made.join(', ')}`);
    assert.deepEqual(made, [
      'GET /v2/', // the lookup client's scheme check (plain HTTP), once
      `GET /v2/app/referrers/${img.manifestDigest}?artifactType=${encodeURIComponent(PROFILE_MEDIA_TYPE)}`,
      `GET /v2/app/manifests/${pushed.manifestDigest}`,
      `GET /v2/app/blobs/${pushed.profileDigest}`,
    ]);

    // Nothing published: the referrers API's empty answer is the one request; the next lookup makes none.
    const empty = imageKey(img2, `${proxy.host}/app:v2`);
    const before = proxy.requests.length;
    assert.equal(await findPublishedProfile(empty, opts, log), undefined);
    assert.deepEqual(proxy.requests.slice(before), [`GET /v2/app/referrers/${img2.manifestDigest}?artifactType=${encodeURIComponent(PROFILE_MEDIA_TYPE)}`]);
    assert.equal(await findPublishedProfile(empty, opts, log), undefined);
    assert.equal(proxy.requests.length, before + 1);
  });
});
