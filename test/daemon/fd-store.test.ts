/**
 * What daemon/fd-store.ts reads from systemd, on the forms systemd writes: the descriptors a
 * start is passed ($LISTEN_FDS with names, only for this process), the unit from the cgroup
 * (v1 hybrid and v2), and whether `systemctl list-jobs` shows a restart of this unit. The
 * whole restart runs under a real systemd in test/systemd-restart.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ownUnit, passedFds, restartJobIn } from '../../src/daemon/fd-store.js';

describe('daemon/fd-store: what systemd passes and says', () => {
  let tmp: string | undefined;
  after(() => (tmp ? rm(tmp, { recursive: true, force: true }) : undefined));

  it('passedFds numbers descriptors from 3 by name, only when LISTEN_PID is this process, and clears the variables', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_FDS: '3', LISTEN_PID: String(process.pid), LISTEN_FDNAMES: 'tocfs-fuse:tocfs-state:tocfs-fuse', OTHER: 'x' };
    assert.deepEqual([...passedFds(env)], [
      ['tocfs-fuse', [3, 5]],
      ['tocfs-state', [4]],
    ]);
    assert.deepEqual(env, { OTHER: 'x' }, 'children must not take the descriptors for theirs');
    assert.equal(passedFds({ LISTEN_FDS: '2', LISTEN_PID: String(process.pid + 1), LISTEN_FDNAMES: 'a:b' }).size, 0, 'passed to another process (a parent that forked us)');
    assert.equal(passedFds({}).size, 0);
    assert.deepEqual([...passedFds({ LISTEN_FDS: '1', LISTEN_PID: String(process.pid) })], [['unknown', [3]]], 'no names: systemd before 227');
  });

  it("ownUnit finds the service in a v1 hybrid or a v2 cgroup file, a user's manager's too, and nothing outside a service", async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-fd-store-'));
    const file = join(tmp, 'cgroup');
    await writeFile(file, '12:pids:/system.slice/tocfs-store.service\n1:name=systemd:/system.slice/tocfs-store.service\n0::/system.slice/tocfs-store.service\n');
    assert.deepEqual(ownUnit(file), { name: 'tocfs-store.service', user: false });
    await writeFile(file, '0::/system.slice/system-tocfs\\x2dmount.slice/tocfs-mount@hello.service\n');
    assert.deepEqual(ownUnit(file), { name: 'tocfs-mount@hello.service', user: false });
    await writeFile(file, '0::/user.slice/user-1000.slice/user@1000.service/app.slice/tocfs-store.service\n');
    assert.deepEqual(ownUnit(file), { name: 'tocfs-store.service', user: true }, "a user's manager: systemctl --user");
    await writeFile(file, '0::/user.slice/user-1000.slice/session-3.scope\n');
    assert.equal(ownUnit(file), undefined);
    assert.equal(ownUnit(join(tmp, 'missing')), undefined);
  });

  it('restartJobIn: a restart (or try-restart) job of this unit; a stop, or another unit restarting, is not', () => {
    const jobs = '480 tocfs-store.service restart running\n481 podman.service start waiting\n';
    assert.equal(restartJobIn(jobs, 'tocfs-store.service'), true);
    assert.equal(restartJobIn('534 tocfs-store.service stop running\n', 'tocfs-store.service'), false);
    assert.equal(restartJobIn('12 tocfs-mount@a.service try-restart running\n', 'tocfs-mount@a.service'), true);
    assert.equal(restartJobIn(jobs, 'tocfs-mount@a.service'), false);
    assert.equal(restartJobIn('', 'tocfs-store.service'), false);
  });
});
