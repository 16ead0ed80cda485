/**
 * `tocfs inspect`, `ls` and `cat` on a registry reference print what they print for the same
 * image as oci:. On images tocfs builds (never skipped) and corpus images.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli } from './helpers/cli.js';
import { hostPlatform } from '../src/source/manifest.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { buildImage, seededContent, type FileSpec } from './helpers/images.js';
import { buildMultiArchImage, type BuiltMultiArchImage } from './helpers/multiarch.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { isolatedCliEnv } from './helpers/registry-env.js';

const IMAGES = ['zstdchunked-skopeo118-multiarch', 'estargz-ctrremote-basic', 'gzip-plain-layers'];
const MULTIARCH = ['zstdchunked-skopeo118-multiarch', 'gzip-plain-multiarch'];

describe('tocfs inspect through a registry', { skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}` }, () => {
  let tmp: string;
  let reg: TestRegistry;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-regcli-'));
    reg = await startRegistry();
    for (const image of MULTIARCH.filter((i) => !IMAGES.includes(i))) await reg.load(join(CORPUS_DIR, image));
    for (const image of IMAGES) {
      await reg.load(join(CORPUS_DIR, image));
      await reg.load(join(CORPUS_DIR, image), `hub/${image}`);
    }
    // Docker Hub's library namespace rewritten to the local registry: short names resolve there.
    await writeFile(join(tmp, 'registries.conf'), `[[registry]]\nprefix = "docker.io/library"\nlocation = "${reg.host}/hub"\ninsecure = true\n`);
    env = isolatedCliEnv(tmp);
  });
  after(async () => {
    await reg?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  for (const image of IMAGES) {
    test(`${image}: same report as oci:`, async () => {
      const args = ['inspect', '--platform', 'linux/amd64'];
      const local = await runCli([...args, '--json', '--stats', `oci:${join(CORPUS_DIR, image)}`], { env });
      assert.equal(local.code, 0, local.stderr);
      const remote = await runCli([...args, '--json', '--stats', '--tls-verify=false', `docker://${reg.host}/${image}`], { env });
      assert.equal(remote.code, 0, remote.stderr);
      const want = JSON.parse(local.stdout.toString());
      const got = JSON.parse(remote.stdout.toString());
      assert.equal(got.reference, `docker://${reg.host}/${image}:latest`);
      assert.deepEqual({ ...got, reference: null }, { ...want, reference: null });

      // A short name: Docker Hub normalisation, then the registries.conf rewrite.
      const short = await runCli([...args, image], { env });
      assert.equal(short.code, 0, short.stderr);
      const text = (await runCli([...args, `oci:${join(CORPUS_DIR, image)}`], { env })).stdout.toString();
      assert.equal(short.stdout.toString(), text.replace(/^Image: +.*$/m, `Image:     docker://docker.io/library/${image}:latest`));
    });
  }

  for (const image of MULTIARCH) {
    test(`${image}: --platform picks the same manifest from oci: and from the registry`, async () => {
      const arm = loadExpected(image).images.find((i) => i.platform.architecture === 'arm64')!;
      const refs = [`oci:${join(CORPUS_DIR, image)}`, `docker://${reg.host}/${image}`];
      const reports = [];
      for (const ref of refs) {
        const r = await runCli(['inspect', '--platform', 'linux/arm64', '--json', '--tls-verify=false', ref], { env });
        assert.equal(r.code, 0, r.stderr);
        const report = JSON.parse(r.stdout.toString());
        assert.equal(report.manifestDigest, arm.manifest_digest, ref);
        assert.equal(report.configDigest, arm.config_digest, ref);
        assert.equal(report.platform, 'linux/arm64/v8', ref);
        assert.deepEqual(report.layers.map((l: { digest: string }) => l.digest), arm.layers, ref);
        reports.push({ ...report, reference: null });
      }
      assert.deepEqual(reports[1], reports[0]);

      // A platform the index lacks: the same error, naming what it has, from both.
      const errors = [];
      for (const ref of refs) {
        const r = await runCli(['inspect', '--platform', 'linux/s390x', '--tls-verify=false', ref], { env });
        assert.notEqual(r.code, 0);
        const line = r.stderr.toString();
        assert.match(line, /no manifest for platform linux\/s390x \(the index has: linux\/amd64, linux\/arm64\/v8\); choose one with --platform/);
        errors.push(line.replace(ref.startsWith('oci:') ? `oci:${join(CORPUS_DIR, image)}` : `docker://${reg.host}/${image}:latest`, 'REF'));
      }
      assert.equal(errors[1], errors[0]);
    });
  }

  test('ls -l and cat: same output as oci:', async () => {
    const image = 'estargz-ctrremote-basic';
    const refs = [`oci:${join(CORPUS_DIR, image)}`, `docker://${reg.host}/${image}`];
    const outputs: string[][] = [];
    for (const [i, ref] of refs.entries()) {
      const cache = ['--cache-dir', join(tmp, `cache-${i}`), '--tls-verify=false', '--platform', 'linux/amd64'];
      const ls = await runCli(['ls', ...cache, '-l', ref, '/data'], { env });
      assert.equal(ls.code, 0, ls.stderr);
      const cat = await runCli(['cat', ...cache, ref, '/data/medium-random.bin'], { env });
      assert.equal(cat.code, 0, cat.stderr);
      assert.equal(cat.stdout.length, 120000);
      outputs.push([ls.stdout.toString(), cat.stdout.toString('base64')]);
    }
    assert.deepEqual(outputs[1], outputs[0]);
  });
});

describe('tocfs inspect, ls and cat through a registry, images tocfs builds', () => {
  const host = hostPlatform();
  const HOST = [host.os, host.architecture, host.variant].filter(Boolean).join('/');
  const layer = (name: string): FileSpec[] => [{ path: 'etc', type: 'dir' }, { path: `etc/${name}`, content: `${name}\n` }];
  const DATA: FileSpec[] = [{ path: 'data', type: 'dir' }, { path: 'data/medium-random.bin', content: seededContent('regcli-medium', 120_000) }, { path: 'data/small.txt', content: 'small\n' }];
  let tmp: string;
  let reg: TestRegistry;
  let env: NodeJS.ProcessEnv;
  const dirs = new Map<string, string>();
  const multi = new Map<string, BuiltMultiArchImage>();
  const IMAGES = ['built-zstd-chunked', 'built-estargz', 'built-gzip-layers'];
  const MULTIARCH = ['built-multiarch-zstd-chunked', 'built-multiarch-gzip'];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-regcli-built-'));
    dirs.set('built-zstd-chunked', (await buildImage(join(tmp, 'built-zstd-chunked'), { format: 'zstd:chunked', layers: [layer('one'), DATA] })).dir);
    dirs.set('built-estargz', (await buildImage(join(tmp, 'built-estargz'), { format: 'estargz', layers: [DATA] })).dir);
    dirs.set('built-gzip-layers', (await buildImage(join(tmp, 'built-gzip-layers'), { format: 'gzip', layers: [layer('one'), layer('two'), DATA] })).dir);
    for (const [name, format] of [['built-multiarch-zstd-chunked', 'zstd:chunked'], ['built-multiarch-gzip', 'gzip']] as const) {
      const img = await buildMultiArchImage(join(tmp, name), format, [
        { platform: { os: 'linux', architecture: 'amd64' }, layers: [layer('amd64')] },
        { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [layer('arm64'), layer('arm64-extra')] },
      ]);
      multi.set(name, img);
      dirs.set(name, img.dir);
    }
    reg = await startRegistry();
    for (const [name, dir] of dirs) {
      await reg.load(dir, name);
      await reg.load(dir, `hub/${name}`);
    }
    await writeFile(join(tmp, 'registries.conf'), `[[registry]]\nprefix = "docker.io/library"\nlocation = "${reg.host}/hub"\ninsecure = true\n`);
    env = isolatedCliEnv(tmp);
  });
  after(async () => {
    await reg?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  for (const image of IMAGES) {
    test(`${image}: same report as oci:`, async () => {
      const args = ['inspect', '--platform', HOST];
      const local = await runCli([...args, '--json', '--stats', `oci:${dirs.get(image)!}`], { env });
      assert.equal(local.code, 0, local.stderr);
      const remote = await runCli([...args, '--json', '--stats', '--tls-verify=false', `docker://${reg.host}/${image}`], { env });
      assert.equal(remote.code, 0, remote.stderr);
      const want = JSON.parse(local.stdout.toString());
      const got = JSON.parse(remote.stdout.toString());
      assert.equal(got.reference, `docker://${reg.host}/${image}:latest`);
      assert.deepEqual({ ...got, reference: null }, { ...want, reference: null });

      // A short name: Docker Hub normalisation, then the registries.conf rewrite.
      const short = await runCli([...args, image], { env });
      assert.equal(short.code, 0, short.stderr);
      const text = (await runCli([...args, `oci:${dirs.get(image)!}`], { env })).stdout.toString();
      assert.equal(short.stdout.toString(), text.replace(/^Image: +.*$/m, `Image:     docker://docker.io/library/${image}:latest`));
    });
  }

  for (const image of MULTIARCH) {
    test(`${image}: --platform picks the same manifest from oci: and from the registry`, async () => {
      const arm = multi.get(image)!.images[1]!;
      const refs = [`oci:${dirs.get(image)!}`, `docker://${reg.host}/${image}`];
      const reports = [];
      for (const ref of refs) {
        const r = await runCli(['inspect', '--platform', 'linux/arm64', '--json', '--tls-verify=false', ref], { env });
        assert.equal(r.code, 0, r.stderr);
        const report = JSON.parse(r.stdout.toString());
        assert.equal(report.manifestDigest, arm.manifestDigest, ref);
        assert.equal(report.configDigest, arm.configDigest, ref);
        assert.equal(report.platform, 'linux/arm64/v8', ref);
        assert.deepEqual(report.layers.map((l: { digest: string }) => l.digest), arm.layers.map((l) => l.digest), ref);
        reports.push({ ...report, reference: null });
      }
      assert.deepEqual(reports[1], reports[0]);

      // A platform the index lacks: the same error, naming what it has, from both.
      const errors = [];
      for (const ref of refs) {
        const r = await runCli(['inspect', '--platform', 'linux/s390x', '--tls-verify=false', ref], { env });
        assert.notEqual(r.code, 0);
        // The error line only (log lines carry their time).
        const line = r.stderr.toString().split('\n').filter((l) => l.startsWith('tocfs:')).join('\n');
        assert.match(line, /no manifest for platform linux\/s390x \(the index has: linux\/amd64, linux\/arm64\/v8\); choose one with --platform/);
        errors.push(line.replace(ref.startsWith('oci:') ? `oci:${dirs.get(image)!}` : `docker://${reg.host}/${image}:latest`, 'REF'));
      }
      assert.equal(errors[1], errors[0]);
    });
  }

  test('ls -l and cat: same output as oci:', async () => {
    const image = 'built-estargz';
    const refs = [`oci:${dirs.get(image)!}`, `docker://${reg.host}/${image}`];
    const outputs: string[][] = [];
    for (const [i, ref] of refs.entries()) {
      const cache = ['--cache-dir', join(tmp, `cache-${i}`), '--tls-verify=false'];
      const ls = await runCli(['ls', ...cache, '-l', ref, '/data'], { env });
      assert.equal(ls.code, 0, ls.stderr);
      const cat = await runCli(['cat', ...cache, ref, '/data/medium-random.bin'], { env });
      assert.equal(cat.code, 0, cat.stderr);
      assert.equal(cat.stdout.length, 120000);
      outputs.push([ls.stdout.toString(), cat.stdout.toString('base64')]);
    }
    assert.deepEqual(outputs[1], outputs[0]);
    assert.match(outputs[0]![0]!, /^-rw-r--r-- 1 0 0 120000 .* medium-random\.bin$/m);
  });
});
