/**
 * Packaging as a user installs tocfs: `npm pack`, `npm install -g` of the tarball under a
 * fresh prefix, then the installed `tocfs` (run from outside the checkout) answers --version,
 * inspects and reads an image (one it built; a corpus one when present: one suite body for
 * each, the corpus one skipped without the corpus), its postinstall
 * patched fuse-native where it could, and the installed scripts/install.sh points the systemd
 * units at the installed binary.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { builtTestImage, corpusTestImage, type TestImage } from './helpers/test-images.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** The image the installed tocfs reads, and what it knows of it. */
interface Source {
  label: string;
  image: TestImage;
  /** A directory to list, and its listing where known; a file to cat with its content. */
  lsDir: string;
  lsOut?: string;
  cat?: [string, string];
}

const SOURCES: Source[] = [
  {
    label: 'an image it built',
    image: builtTestImage('package', [[{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'installed tocfs reads this\n' }]]),
    lsDir: '/etc',
    lsOut: 'motd\n',
    cat: ['/etc/motd', 'installed tocfs reads this\n'],
  },
  { label: 'a corpus image', image: corpusTestImage('zstdchunked-skopeo118-multiarch'), lsDir: '/' },
];

for (const source of SOURCES) {
  describe(`npm pack, npm install -g, run the installed tocfs on ${source.label}`, { skip: source.image.skip }, () => {
    const tmp = mkdtempSync(join(tmpdir(), 'tocfs-package-'));
    const prefix = join(tmp, 'prefix');
    const tocfs = join(prefix, 'bin', 'tocfs');
    // The installed copy runs from a directory that has nothing to do with the checkout.
    const away = mkdtempSync(join(tmp, 'cwd-'));
    const env = { ...process.env, HOME: join(tmp, 'home'), TOCFS_LOG_JSON: '1', PATH: `${join(prefix, 'bin')}:${process.env.PATH}` };
    let files: string[] = [];

    before(async () => {
      // dist/ is shared with whoever else builds in this checkout: build under their lock.
      // The build npm pack's prepack runs (tsc, then scripts/bundle.mjs), here under the lock; the pack itself runs no scripts.
      await run('flock', ['/tmp/tocfs-build.lock', 'npm', 'run', '-s', 'build'], { cwd: ROOT });
      const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
      const packed = (JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>)[0]!;
      files = packed.files.map((f) => f.path);
      await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(tmp, packed.filename)], { cwd: away, env, timeout: 300_000 });
    });
    after(() => rmSync(tmp, { recursive: true, force: true }));

    it('packs what runs and what the docs name, and no sources or tests', () => {
      for (const f of ['bin/tocfs', 'dist/cli/entry.js', 'dist/bundle/entry.js', 'systemd/tocfs-store.service', 'systemd/tocfs-mount@.service', 'scripts/install.sh', 'scripts/patch-fuse-native.sh', 'scripts/fuse-native-timespec.patch', 'docs/guide.md', 'README.md']) {
        assert.ok(files.includes(f), `${f} is in the package`);
      }
      assert.deepEqual(files.filter((f) => f.startsWith('src/') || f.startsWith('test/') || f.startsWith('node_modules/')), []);
    });

    it('tocfs --version and --help', async () => {
      assert.ok(existsSync(tocfs), `${tocfs} exists`);
      assert.equal((await run(tocfs, ['--version'], { cwd: away, env })).stdout.trim(), version);
      assert.match((await run(tocfs, ['--help'], { cwd: away, env })).stdout, /Usage: tocfs <command>/);
    });

    it('inspects, lists and reads the image like the checkout does', async () => {
      const ref = `oci:${await source.image.dir()}`;
      const platform = source.image.platformArgs;
      const installed = await run(tocfs, ['inspect', '--json', ...platform, ref], { cwd: away, env });
      const checkout = await run(process.execPath, [join(ROOT, 'bin', 'tocfs'), 'inspect', '--json', ...platform, ref], { cwd: away, env });
      assert.deepEqual(JSON.parse(installed.stdout), JSON.parse(checkout.stdout));
      const layers = (JSON.parse(installed.stdout) as { layers: Array<{ lazy: boolean }> }).layers;
      assert.ok(layers.length > 0 && layers.every((l) => l.lazy), JSON.stringify(layers));
      if (source.image.layerCount !== undefined) assert.equal(layers.length, source.image.layerCount);
      const ls = await run(tocfs, ['ls', '--cache-dir', join(tmp, 'cache'), ...platform, ref, source.lsDir], { cwd: away, env });
      assert.ok(ls.stdout.trim().split('\n').length > 0, ls.stdout);
      if (source.lsOut !== undefined) assert.equal(ls.stdout, source.lsOut);
      if (source.cat) assert.equal((await run(tocfs, ['cat', '--cache-dir', join(tmp, 'cache'), ...platform, ref, source.cat[0]], { cwd: away, env })).stdout, source.cat[1]);
    });

    it('postinstall patched the installed fuse-native where headers and a compiler exist', async (t) => {
      if (!existsSync('/usr/include/node/node_api.h')) return t.skip('no Node headers here: the stock addon is kept');
      const pkgDir = join(prefix, 'lib', 'node_modules', 'tocfs');
      const { stdout } = await run(process.execPath, ['-e', "const b = require('node-gyp-build')(require('node:path').dirname(require.resolve('fuse-native/package.json'))); console.log(b.stat_times_sec_nsec)"], { cwd: pkgDir, env });
      assert.equal(stdout.trim(), '1');
    });

    it('the installed scripts/install.sh points the systemd units at the installed tocfs', async () => {
      const root = join(tmp, 'root');
      await run('sh', [join(prefix, 'lib', 'node_modules', 'tocfs', 'scripts', 'install.sh'), '--prefix', root, '--no-start'], { cwd: away, env });
      const units = readdirSync(join(root, 'etc', 'systemd', 'system'));
      assert.deepEqual(units.sort(), ['tocfs-mount@.service', 'tocfs-store.service']);
      for (const unit of units) {
        const execStart = readFileSync(join(root, 'etc', 'systemd', 'system', unit), 'utf8').split('\n').find((l) => l.startsWith('ExecStart='));
        assert.ok(execStart?.startsWith(`ExecStart=${tocfs} `), `${unit}: ${execStart}`);
      }
      // The default config it installs is the installed tocfs's own example.
      assert.equal(readFileSync(join(root, 'etc', 'tocfs', 'config.toml'), 'utf8'), (await run(tocfs, ['config', 'example'], { cwd: away, env })).stdout);
    });
  });
}
