/**
 * A daemon that has begun to stop finishes its shutdown when SIGTERM comes again (`tocfs
 * unmount` signals a daemon that noticed the unmount by itself), and a second SIGINT still
 * ends it at once.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const SERVE_MOUNT = fileURLToPath(new URL('../../src/daemon/serve-mount.ts', import.meta.url));
const LOG = fileURLToPath(new URL('../../src/log.ts', import.meta.url));

describe('daemon: signals while stopping', () => {
  let tmp: string;
  let script: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-stop-'));
    script = join(tmp, 'daemon.mts');
    // Stops as a daemon does (a signal, or the mount gone: this directory is no mount), then takes 1.5 s to shut down.
    await writeFile(
      script,
      `import { createLogger } from ${JSON.stringify(LOG)};
       import { untilStopped } from ${JSON.stringify(SERVE_MOUNT)};
       const log = createLogger({ level: 'info', fd: 2, format: 'json' });
       const why = await untilStopped(${JSON.stringify(tmp)}, log);
       console.log('stopping ' + why);
       await new Promise((r) => setTimeout(r, 1500));
       console.log('finished');`,
    );
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  /** Runs the daemon, sends `again` once it says it is stopping; its exit and output. */
  function run(again: NodeJS.Signals): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'pipe'], cwd: fileURLToPath(new URL('../..', import.meta.url)) });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('stopping') && !child.killed) child.kill(again);
    });
    return new Promise((r) => child.on('exit', (code, signal) => r({ code, signal, out, err })));
  }

  it('SIGTERM while stopping: the shutdown finishes and the process exits 0', async () => {
    const r = await run('SIGTERM');
    assert.equal(r.signal, null, `not killed by the signal: ${r.err}`);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^stopping unmounted\nfinished\n$/);
    assert.match(r.err, /already stopping: the shutdown finishes first/);
  });

  it('SIGINT while stopping: the process exits at once, saying so', async () => {
    const r = await run('SIGINT');
    assert.equal(r.code, 130, r.err);
    assert.doesNotMatch(r.out, /finished/);
    assert.match(r.err, /interrupted again: exiting at once/);
  });
});
