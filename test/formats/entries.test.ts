/**
 * normaliseEntries: what a TOC's entries cost in memory is part of what it returns. Entries
 * share one frozen object per distinct time (even when modtime and accesstime alternate),
 * and each entry has exactly the fields its kind has.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EMPTY_SHA256, sha256 } from '../../src/digest.js';
import { DEFAULT_TOC_LIMITS } from '../../src/formats/toc.js';
import { normaliseEntries } from '../../src/formats/entries.js';

const ctx = { layer: 'sha256:test', dataEnd: 1_000_000, hideLandmarks: false, limits: DEFAULT_TOC_LIMITS };
const GO_ZERO = '0001-01-01T00:00:00Z';

describe('formats: normalised TOC entries', () => {
  it('entries share one frozen time object per distinct time, whichever fields state it', () => {
    const raw = [];
    for (let i = 0; i < 6; i++) {
      raw.push({ type: 'dir', name: `./d${i}/`, mode: 0o755, modtime: i % 2 ? '2024-05-01T10:00:00Z' : '2024-05-01T10:00:00.5Z', accesstime: GO_ZERO, changetime: '2024-05-01T10:00:00Z' });
    }
    const { entries } = normaliseEntries(raw, ctx);
    assert.deepEqual(entries.map((e) => e.path), ['d0', 'd1', 'd2', 'd3', 'd4', 'd5']);
    const whole = entries[1]!.mtime;
    assert.deepEqual(whole, { sec: 1714557600, nsec: 0 });
    assert.deepEqual(entries[0]!.mtime, { sec: 1714557600, nsec: 500_000_000 });
    assert.ok(Object.isFrozen(whole));
    for (const e of entries) {
      assert.equal(e.mtime, e.path === 'd0' || e.path === 'd2' || e.path === 'd4' ? entries[0]!.mtime : whole);
      assert.equal(e.ctime, whole);
      assert.equal('atime' in e, false, 'Go zero time is no time');
    }
  });

  it('each kind of entry has the fields it has, and no empty ones', () => {
    const data = Buffer.from('hello');
    const digest = sha256(data);
    const { entries } = normaliseEntries(
      [
        { type: 'dir', name: './', mode: 0o755 },
        { type: 'reg', name: './a-rather-long-file-name.txt', mode: 0o644, size: 5, digest, offset: 10, endOffset: 30, modtime: '2024-05-01T10:00:00Z' },
        { type: 'reg', name: 'empty', mode: 0o600 },
        { type: 'symlink', name: './link', linkName: '/etc/passwd' },
        { type: 'hardlink', name: './hard', linkName: './a-rather-long-file-name.txt', userName: 'root', uid: 0 },
        { type: 'char', name: './null', devMajor: 1, devMinor: 3 },
      ],
      ctx,
    );
    const [root, file, empty, symlink, hard, dev] = entries;
    assert.deepEqual(Object.keys(root!).sort(), ['chunks', 'gid', 'mode', 'mtime', 'path', 'size', 'type', 'uid']);
    assert.equal(file!.path, 'a-rather-long-file-name.txt');
    assert.equal(file!.digest, digest);
    assert.deepEqual(file!.chunks, [{ offset: 0, size: 5, compressedOffset: 10, compressedEnd: 30, innerOffset: 0, digest, zeros: false }]);
    assert.equal(file!.chunks[0]!.digest, file!.digest);
    assert.deepEqual([empty!.digest, empty!.chunks.length, Object.isFrozen(empty!.chunks)], [EMPTY_SHA256, 0, true]);
    assert.deepEqual([symlink!.linkName, 'digest' in symlink!, 'devMajor' in symlink!], ['/etc/passwd', false, false]);
    assert.deepEqual([hard!.linkName, hard!.userName], ['a-rather-long-file-name.txt', 'root']);
    assert.deepEqual([dev!.devMajor, dev!.devMinor, 'linkName' in dev!], [1, 3, false]);
    assert.equal(root!.mtime, dev!.mtime, 'entries without a time share the epoch');
    assert.deepEqual(root!.mtime, { sec: 0, nsec: 0 });
  });
});
