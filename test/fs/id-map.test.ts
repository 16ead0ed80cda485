/**
 * The store's owner map for rootless Podman (fs/id-map.ts): /etc/subuid lines found as
 * containers/storage finds them (the user's name or numeric ID, comments skipped, ranges
 * sorted by start), container 0 → the user, then the ranges in turn, anything else 65534.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { mappedCount, OVERFLOW_ID, parseSubIds, rangesOf, rootlessIdMap, toHost } from '../../src/fs/id-map.js';

const SUBUID = `# comment
alice:100000:65536
bob:165536:65536

 1001:400000:10 
alice:300000:5
broken line
alice:x:5
alice:7:0
`;

describe('fs/id-map', () => {
  it('parseSubIds: lines of the user by name or numeric ID, sorted by start; malformed and other users\' lines skipped', () => {
    assert.deepEqual(parseSubIds(SUBUID, { name: 'alice', id: 1001 }), [
      { start: 100000, count: 65536 },
      { start: 300000, count: 5 },
      { start: 400000, count: 10 },
    ]);
    assert.deepEqual(parseSubIds(SUBUID, { name: 'bob', id: 1002 }), [{ start: 165536, count: 65536 }]);
    assert.deepEqual(parseSubIds(SUBUID, { name: 'carol', id: 1003 }), []);
  });

  it('toHost: 0 is the user, 1.. the ranges one after another, beyond them the overflow ID', () => {
    const map = rangesOf(1001, [{ start: 100000, count: 1000 }, { start: 300000, count: 5 }]);
    assert.deepEqual(map, [
      { inside: 0, outside: 1001, count: 1 },
      { inside: 1, outside: 100000, count: 1000 },
      { inside: 1001, outside: 300000, count: 5 },
    ]);
    assert.equal(toHost(map, 0), 1001);
    assert.equal(toHost(map, 1), 100000);
    assert.equal(toHost(map, 1000), 100999);
    assert.equal(toHost(map, 1001), 300000);
    assert.equal(toHost(map, 1005), 300004);
    assert.equal(toHost(map, 1006), OVERFLOW_ID);
    assert.equal(toHost(map, 65534), OVERFLOW_ID);
    assert.equal(mappedCount(map), 1006);
  });

  it('rootlessIdMap reads both files by the user\'s name; a missing file maps container root alone', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tocfs-id-map-'));
    try {
      await writeFile(join(dir, 'subuid'), SUBUID);
      await writeFile(join(dir, 'subgid'), 'alice:200000:100\n');
      const map = await rootlessIdMap({ uid: 1001, gid: 1500, name: 'alice' }, { subuid: join(dir, 'subuid'), subgid: join(dir, 'subgid') });
      assert.equal(toHost(map.uids, 0), 1001);
      assert.equal(toHost(map.uids, 65536), 165535);
      assert.equal(toHost(map.uids, 65537), 300000);
      assert.equal(toHost(map.gids, 0), 1500);
      assert.equal(toHost(map.gids, 100), 200099);
      assert.equal(toHost(map.gids, 101), OVERFLOW_ID);
      const none = await rootlessIdMap({ uid: 1001, gid: 1500, name: 'alice' }, { subuid: join(dir, 'missing'), subgid: join(dir, 'missing') });
      assert.deepEqual(none, { uids: [{ inside: 0, outside: 1001, count: 1 }], gids: [{ inside: 0, outside: 1500, count: 1 }] });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
