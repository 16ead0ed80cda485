/**
 * Waiting for a daemon's readiness (daemon/spawn-daemon.ts): an error line, an early exit, and
 * an exit that happened before the parent began to wait (an early mount daemon that died while
 * the parent parsed) each end the wait with what went wrong, the log's last lines included.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { awaitReady, READY_FD } from '../../src/daemon/spawn-daemon.js';

function child(code: string): ChildProcess {
  return spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
}

describe('daemon: waiting for readiness', () => {
  let tmp: string;
  let log: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-spawn-'));
    log = join(tmp, 'daemon.log');
    await writeFile(log, 'starting\ncannot open /dev/fuse: EACCES\n');
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  it('resolves with the pid on a ready line', async () => {
    const c = child(`require('fs').writeSync(${READY_FD}, '{"ready":true}\\n'); setTimeout(() => {}, 200)`);
    assert.equal(await awaitReady(c, log), c.pid);
  });

  it('rejects with the error line the daemon sends', async () => {
    const c = child(`require('fs').writeSync(${READY_FD}, '{"error":"mountpoint /x: does not exist"}\\n')`);
    await assert.rejects(awaitReady(c, log), /mountpoint \/x: does not exist/);
  });

  it('rejects with the exit and the end of the log when the daemon exits first', async () => {
    await assert.rejects(awaitReady(child('process.exit(3)'), log), /the mount daemon exited with status 3 before it was ready; its log \(.*daemon\.log\) ends with:\nstarting\ncannot open \/dev\/fuse: EACCES/);
  });

  it('rejects at once for a daemon that had already exited when the wait began', async () => {
    const c = child('process.exit(4)');
    await new Promise((resolve) => c.once('exit', resolve));
    const outcome = await Promise.race([awaitReady(c, log).then(() => 'ready', (e: Error) => e.message), new Promise((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5000))]);
    assert.match(String(outcome), /exited with status 4 before it was ready/);
  });
});
