/**
 * `tocfs inspect`, `ls` and `cat` on a registry reference print what they print for the same
 * image as oci:. One suite body runs on images tocfs builds (never skipped) and on corpus images
 * (skipped without the corpus).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli } from './helpers/cli.js';
import { hostPlatform } from '../src/source/manifest.js';
import { CORPUS_DIR, HAVE_CORPUS } from './helpers/corpus.js';
import { buildImage, seededContent, type FileSpec } from './helpers/images.js';
import { buildMultiArchImage, type BuiltMultiArchImage } from './helpers/multiarch.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { isolatedCliEnv } from './helpers/registry-env.js';
import { builtPlatformWant, corpusPlatformWant, type PlatformWant } from './helpers/test-images.js';

const host = hostPlatform();
const HOST = [host.os, host.architecture, host.variant].filter(Boolean).join('/');

/** The images a run of the suite serves, and what it knows of them. */
interface ImageSet {
  label: string;
  skip: string | false;
  tmpPrefix: string;
  /** Single-platform images (or multi-platform ones read for one platform), and multi-platform ones with linux/amd64 and linux/arm64/v8. */
  images: string[];
  multiarch: string[];
  /** Makes the images under `tmp` (the corpus is already there); returns each one's OCI layout. */
  prepare(tmp: string): Promise<Map<string, string>>;
  /** The platform `inspect` is asked for, and what ls and cat are given. */
  platform: string;
  lsCatArgs: string[];
  /** A multi-platform image's linux/arm64/v8 image. */
  armWant(image: string): PlatformWant;
  /** An eStargz image with /data/medium-random.bin (120000 bytes), and its ls -l line where known. */
  estargz: string;
  lsLine?: RegExp;
}

const layer = (name: string): FileSpec[] => [{ path: 'etc', type: 'dir' }, { path: `etc/${name}`, content: `${name}\n` }];
const DATA: FileSpec[] = [{ path: 'data', type: 'dir' }, { path: 'data/medium-random.bin', content: seededContent('regcli-medium', 120_000) }, { path: 'data/small.txt', content: 'small\n' }];
const multi = new Map<string, BuiltMultiArchImage>();

const SETS: ImageSet[] = [
  {
    label: 'images tocfs builds',
    skip: false,
    tmpPrefix: 'tocfs-regcli-built-',
    images: ['built-zstd-chunked', 'built-estargz', 'built-gzip-layers'],
    multiarch: ['built-multiarch-zstd-chunked', 'built-multiarch-gzip'],
    prepare: async (tmp) => {
      const dirs = new Map<string, string>();
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
      return dirs;
    },
    platform: HOST,
    lsCatArgs: [],
    armWant: (image) => builtPlatformWant(multi.get(image)!, 'arm64'),
    estargz: 'built-estargz',
    lsLine: /^-rw-r--r-- 1 0 0 120000 .* medium-random\.bin$/m,
  },
  {
    label: 'corpus images',
    skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`,
    tmpPrefix: 'tocfs-regcli-',
    images: ['zstdchunked-skopeo118-multiarch', 'estargz-ctrremote-basic', 'gzip-plain-layers'],
    multiarch: ['zstdchunked-skopeo118-multiarch', 'gzip-plain-multiarch'],
    prepare: async () => new Map(['zstdchunked-skopeo118-multiarch', 'estargz-ctrremote-basic', 'gzip-plain-layers', 'gzip-plain-multiarch'].map((i) => [i, join(CORPUS_DIR, i)])),
    platform: 'linux/amd64',
    lsCatArgs: ['--platform', 'linux/amd64'],
    armWant: (image) => corpusPlatformWant(image, 'arm64'),
    estargz: 'estargz-ctrremote-basic',
  },
];

for (const set of SETS) {
  describe(`tocfs inspect, ls and cat through a registry, ${set.label}`, { skip: set.skip }, () => {
    let tmp: string;
    let reg: TestRegistry;
    let env: NodeJS.ProcessEnv;
    let dirs = new Map<string, string>();

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), set.tmpPrefix));
      dirs = await set.prepare(tmp);
      reg = await startRegistry();
      for (const [name, dir] of dirs) {
        await reg.load(dir, name);
        if (set.images.includes(name)) await reg.load(dir, `hub/${name}`);
      }
      // Docker Hub's library namespace rewritten to the local registry: short names resolve there.
      await writeFile(join(tmp, 'registries.conf'), `[[registry]]\nprefix = "docker.io/library"\nlocation = "${reg.host}/hub"\ninsecure = true\n`);
      env = isolatedCliEnv(tmp);
    });
    after(async () => {
      await reg?.stop();
      await rm(tmp, { recursive: true, force: true });
    });

    for (const image of set.images) {
      test(`${image}: same report as oci:`, async () => {
        const args = ['inspect', '--platform', set.platform];
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

    for (const image of set.multiarch) {
      test(`${image}: --platform picks the same manifest from oci: and from the registry`, async () => {
        const arm = set.armWant(image);
        const refs = [`oci:${dirs.get(image)!}`, `docker://${reg.host}/${image}`];
        const reports = [];
        for (const ref of refs) {
          const r = await runCli(['inspect', '--platform', 'linux/arm64', '--json', '--tls-verify=false', ref], { env });
          assert.equal(r.code, 0, r.stderr);
          const report = JSON.parse(r.stdout.toString());
          assert.equal(report.manifestDigest, arm.manifestDigest, ref);
          assert.equal(report.configDigest, arm.configDigest, ref);
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
          // All but the log lines (they carry their time).
          const line = r.stderr.toString().split('\n').filter((l) => !l.startsWith('{')).join('\n');
          assert.match(line, /no manifest for platform linux\/s390x \(the index has: linux\/amd64, linux\/arm64\/v8\); choose one with --platform/);
          errors.push(line.replace(ref.startsWith('oci:') ? `oci:${dirs.get(image)!}` : `docker://${reg.host}/${image}:latest`, 'REF'));
        }
        assert.equal(errors[1], errors[0]);
      });
    }

    test('ls -l and cat: same output as oci:', async () => {
      const image = set.estargz;
      const refs = [`oci:${dirs.get(image)!}`, `docker://${reg.host}/${image}`];
      const outputs: string[][] = [];
      for (const [i, ref] of refs.entries()) {
        const cache = ['--cache-dir', join(tmp, `cache-${i}`), '--tls-verify=false', ...set.lsCatArgs];
        const ls = await runCli(['ls', ...cache, '-l', ref, '/data'], { env });
        assert.equal(ls.code, 0, ls.stderr);
        const cat = await runCli(['cat', ...cache, ref, '/data/medium-random.bin'], { env });
        assert.equal(cat.code, 0, cat.stderr);
        assert.equal(cat.stdout.length, 120000);
        outputs.push([ls.stdout.toString(), cat.stdout.toString('base64')]);
      }
      assert.deepEqual(outputs[1], outputs[0]);
      if (set.lsLine) assert.match(outputs[0]![0]!, set.lsLine);
    });
  });
}
