/**
 * The README's first command: `npm run demo` builds an image from this machine's files, pushes it
 * to a real registry on loopback, mounts it lazily and runs Python from the mount.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

test('npm run demo: mounts a lazily pulled Python image, runs it, fetches a fraction of the layer, cleans up', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tocfs-demo-test-'));
  try {
    const r = spawnSync('npm', ['run', '-s', 'demo', '--', '--no-setup', '--dir', dir], { encoding: 'utf8', timeout: 240_000 });
    const out = `${r.stdout}\n${r.stderr}`;
    assert.equal(r.status, 0, out);
    assert.match(r.stdout, /hello from 3\.\d+\.\d+ on a lazily pulled image/);
    for (const f of ['json/decoder.py', 'os.py', 'usr/bin/python3.11']) assert.match(r.stdout, new RegExp(`^ok  \\S*${f.replace('.', '\\.')}`, 'm'));
    const pct = (label: string): number => Number(new RegExp(`${label}: [\\d,]+ of [\\d,]+ compressed layer bytes fetched \\(([\\d.]+) %\\)`).exec(r.stdout)?.[1]);
    // The mount reads footer and TOC only; start-up reads the interpreter, its libraries and a few modules.
    assert.ok(pct('after the mount and ls') < 5, out);
    assert.ok(pct('after python start-up') < 60, out);
    const mounts = spawnSync('grep', ['-c', join(dir, 'mnt'), '/proc/self/mounts'], { encoding: 'utf8' });
    assert.equal(mounts.stdout.trim(), '0', 'the demo unmounts when it ends');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
