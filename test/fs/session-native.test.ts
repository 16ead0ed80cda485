/**
 * The tocfs_fuse_dev addon (native/fuse_dev.c, loaded by src/fs/session/native.ts) on real
 * parts: an fd and a payload handed between two processes over a Unix socket (and from a child
 * over a socket pair, as fusermount answers), systemd's fd store message received by a
 * datagram socket, startReading on a socket (batches, an exception from the callback, EOF,
 * stop), and as root a real FUSE mount: the kernel's FUSE_INIT arrives,
 * the passthrough ioctls and a reply to no request are refused before INIT, and a lazy unmount
 * ends the reading. Skipped whole when the addon is not built (scripts/build-native.sh).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { FUSE_DEV_VERSION, loadFuseDev, type FuseDev, type FuseDevError } from '../../src/fs/session/native.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const NATIVE_TS = pathToFileURL(join(ROOT, 'src', 'fs', 'session', 'native.ts')).href;
const loaded = loadFuseDev();
const dev = 'unavailable' in loaded ? undefined : loaded;
const canMount = process.getuid?.() === 0 && existsSync('/dev/fuse');
const hasPython = spawnSync('python3', ['-c', 'import socket; socket.recv_fds'], { stdio: 'ignore' }).status === 0;

const FUSE_INIT = 26;
const IN_HEADER = 40; // struct fuse_in_header: len u32, opcode u32, unique u64, nodeid u64, uid, gid, pid, padding u32
/** Bigger than a Unix socket's buffer (about 208 KiB by default), so both sides have to loop. */
const PAYLOAD_BYTES = 1 << 20;

interface Child {
  /** Resolves with the exit and everything written, once it exits. */
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
  /** Resolves once stdout has a line `line`; rejects if the child exits first or after 20 s. */
  line(line: string): Promise<void>;
  stdin: NodeJS.WritableStream;
  kill(): void;
}

function child(cmd: string, args: string[]): Child {
  const proc = spawn(cmd, args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: Array<{ line: string; resolve: () => void }> = [];
  proc.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    const lines = stdout.split('\n');
    for (const w of [...waiters]) if (lines.includes(w.line)) (waiters.splice(waiters.indexOf(w), 1), w.resolve());
  });
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    proc.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return {
    done,
    line: (line) => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        new Promise<void>((resolve) => (stdout.split('\n').includes(line) ? resolve() : waiters.push({ line, resolve }))),
        done.then((r) => Promise.reject(new Error(`the child exited (${r.code ?? r.signal}) before printing ${line}: ${r.stderr}`))),
        new Promise<void>((_, reject) => {
          timer = setTimeout(() => {
            proc.kill('SIGKILL');
            reject(new Error(`no line ${JSON.stringify(line)} from the child in 20 s; it printed ${JSON.stringify(stdout)}`));
          }, 20_000);
        }),
      ]).finally(() => clearTimeout(timer));
    },
    stdin: proc.stdin,
    kill: () => proc.kill('SIGKILL'),
  };
}

/** A child running `code` as an ES module with tsx, `dev` already loaded. */
function nodeChild(code: string): Child {
  const prelude = `import { loadFuseDev } from ${JSON.stringify(NATIVE_TS)};\nconst dev = loadFuseDev();\nif ('unavailable' in dev) throw new Error(dev.unavailable);\n`;
  return child(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', prelude + code]);
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `fn` throws a FuseDevError with this code (or, with a function, one it accepts). */
function throwsErrno(fn: () => unknown, code: string | ((e: FuseDevError) => void), syscall: string): FuseDevError {
  let caught: FuseDevError | undefined;
  try {
    fn();
  } catch (err) {
    caught = err as FuseDevError;
  }
  assert.ok(caught instanceof Error, 'it throws an Error');
  assert.equal(typeof caught.code, 'string');
  assert.equal(typeof caught.errno, 'number');
  assert.ok(caught.errno > 0, `errno ${caught.errno} is positive`);
  assert.equal(caught.syscall, syscall);
  assert.ok(caught.message.startsWith(`${syscall}(`), caught.message);
  if (typeof code === 'string') {
    assert.equal(caught.code, code, caught.message);
    assert.equal(caught.errno, constants.errno[code as keyof typeof constants.errno]);
  } else code(caught);
  return caught;
}

function mounted(mnt: string): string | undefined {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[4] === mnt);
}

describe('fs/session/native: the tocfs_fuse_dev addon', { skip: 'unavailable' in loaded ? loaded.unavailable : false }, () => {
  const fuse = dev as FuseDev;
  const tmp = mkdtempSync(join(tmpdir(), 'tocfs-native-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it(`loads and reports version ${FUSE_DEV_VERSION}, the one this tocfs needs`, () => {
    assert.equal(fuse.version, FUSE_DEV_VERSION);
    assert.equal(loadFuseDev(), fuse, 'loaded once');
  });

  it('mallocFreeBytes counts what freed buffers left resident and mallocTrim gives it back; limitMallocArenas takes a positive count', () => {
    // In a child of its own, so that this process's heap does not blur the figures.
    const script = `
      const dev = require(${JSON.stringify(join(ROOT, 'native', 'build', 'Release', 'tocfs_fuse_dev.node'))});
      const rss = () => process.memoryUsage.rss();
      if (dev.limitMallocArenas(2) !== true) throw new Error('M_ARENA_MAX refused');
      let bufs = [];
      for (let i = 0; i < 2000; i++) bufs.push(Buffer.alloc(32 * 1024, 1));
      const keep = bufs.pop(); // the arena's top stays in use: only a trim can give the rest back
      bufs = null; gc(); gc();
      // V8 frees array buffers' memory on a thread of its own after the collection.
      setTimeout(() => {
        const freed = rss();
        const free = dev.mallocFreeBytes();
        const trimmed = dev.mallocTrim();
        console.log(JSON.stringify({ freed, after: rss(), free, trimmed, kept: keep.length }));
      }, 300);`;
    // From a file: under -e the buffers outlived gc().
    const file = join(tmp, 'trim.cjs');
    writeFileSync(file, script);
    const r = spawnSync(process.execPath, ['--expose-gc', file], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { freed: number; after: number; free: number; trimmed: boolean };
    assert.ok(out.free > 40e6, `glibc holds the freed buffers: ${out.free} bytes free`);
    assert.equal(out.trimmed, true);
    assert.ok(out.freed - out.after > 40e6, `64 MB of freed 32 KiB buffers: RSS ${out.freed} before the trim, ${out.after} after`);
    assert.throws(() => fuse.limitMallocArenas(0), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /^n must be an integer from 1 to 2147483647$/ });
  });

  it('setMallocMmapThreshold keeps large blocks out of the arenas: freed, they are not left resident', () => {
    // glibc's own threshold slides up to a freed mapped block's size (6 MiB here), so the 5 MiB
    // blocks after it come from an arena, and freed between blocks that stay, they stay there.
    const script = `
      const dev = require(${JSON.stringify(join(ROOT, 'native', 'build', 'Release', 'tocfs_fuse_dev.node'))});
      if (process.argv[2] === 'tuned' && dev.setMallocMmapThreshold(4 * 1024 * 1024) !== true) throw new Error('M_MMAP_THRESHOLD refused');
      let first = Buffer.alloc(6 * 1024 * 1024, 1);
      first = null; gc();
      setTimeout(() => {
        let blocks = [];
        const kept = [];
        for (let i = 0; i < 4; i++) { blocks.push(Buffer.alloc(5 * 1024 * 1024, 1)); kept.push(Buffer.alloc(64 * 1024, 1)); }
        blocks = null; gc();
        setTimeout(() => console.log(JSON.stringify({ free: dev.mallocFreeBytes(), kept: kept.length })), 300);
      }, 300);`;
    const file = join(tmp, 'mmap-threshold.cjs');
    writeFileSync(file, script);
    const free = (how: string): number => {
      const r = spawnSync(process.execPath, ['--expose-gc', file, how], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return (JSON.parse(r.stdout) as { free: number }).free;
    };
    const untuned = free('untuned');
    const tuned = free('tuned');
    assert.ok(untuned > 15e6, `without the threshold glibc keeps the four freed 5 MiB blocks: ${untuned} bytes free`);
    assert.ok(tuned < 4e6, `with a 4 MiB threshold they were unmapped: ${tuned} bytes free`);
    assert.throws(() => fuse.setMallocMmapThreshold(0), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /^bytes must be an integer from 4096 to 33554432$/ });
  });

  it('bad arguments throw TypeErrors', () => {
    assert.throws(() => fuse.write(1, ['x' as unknown as Buffer]), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /buffers\[0\] must be a Buffer/ });
    assert.throws(() => fuse.startReading(-1, 4096, () => {}), { name: 'TypeError', message: /fd must be an integer/ });
    assert.throws(() => fuse.startReading(0, 4096, null as unknown as () => void), { name: 'TypeError', message: /onRequests must be a function/ });
    assert.throws(() => fuse.unmount('/a\0b', true), { name: 'TypeError', message: /NUL/ });
    assert.throws(() => fuse.sendFd(join(tmp, 'nobody.sock'), 0, Buffer.alloc(0)), { name: 'TypeError', message: /payload must not be empty/ });
  });

  it('sendFd in one process hands an fd and a 1 MiB payload to acceptFd in another', async () => {
    const file = join(tmp, 'handed-over');
    const content = randomBytes(5000);
    writeFileSync(file, content);
    const sock = join(tmp, 'handover.sock');
    writeFileSync(sock, ''); // a stale file that is not a socket is left alone: bind fails
    throwsErrno(() => fuse.listenUnix(sock), 'EADDRINUSE', 'bind');
    rmSync(sock);
    closeSync(fuse.listenUnix(sock)); // leaves its socket behind, stale, and the next one replaces it
    const listenFd = fuse.listenUnix(sock);
    assert.equal(statSync(sock).mode & 0o777, 0o600);
    // The sender opens the file and unlinks it: only the fd it hands over still leads to it.
    const sender = nodeChild(`
      import { openSync, unlinkSync } from 'node:fs';
      const fd = openSync(${JSON.stringify(file)}, 'r');
      unlinkSync(${JSON.stringify(file)});
      const payload = Buffer.alloc(${PAYLOAD_BYTES});
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 255;
      dev.sendFd(${JSON.stringify(sock)}, fd, payload);
    `);
    let received: { fd: number; payload: Buffer };
    try {
      received = fuse.acceptFd(listenFd, 30_000); // blocks this process while the child connects
    } catch (err) {
      sender.kill();
      throw new Error(`${(err as Error).message}; the sender said: ${(await sender.done).stderr}`);
    } finally {
      closeSync(listenFd);
    }
    const exit = await sender.done;
    assert.equal(exit.code, 0, exit.stderr);
    try {
      assert.equal(received.payload.length, PAYLOAD_BYTES);
      const expected = Buffer.alloc(PAYLOAD_BYTES);
      for (let i = 0; i < expected.length; i++) expected[i] = (i * 31 + 7) & 255;
      assert.ok(received.payload.equals(expected), 'the payload arrives intact');
      assert.equal(existsSync(file), false);
      assert.equal(fstatSync(received.fd).nlink, 0, 'the received fd is the unlinked file');
      const back = Buffer.alloc(content.length + 10);
      assert.equal(readSync(received.fd, back, 0, back.length, 0), content.length);
      assert.ok(back.subarray(0, content.length).equals(content), 'the file reads the same through the received fd');
    } finally {
      closeSync(received.fd);
    }
  });

  it('acceptFd times out with ETIMEDOUT when nobody connects', () => {
    const listenFd = fuse.listenUnix(join(tmp, 'lonely.sock'));
    try {
      const start = Date.now();
      const err = throwsErrno(() => fuse.acceptFd(listenFd, 300), 'ETIMEDOUT', 'accept');
      assert.ok(Date.now() - start >= 290, `waited ${Date.now() - start} ms`);
      assert.match(err.message, /nobody connected within 300 ms/);
    } finally {
      closeSync(listenFd);
    }
  });

  it('acceptFd refuses a connection that brings no fd (EPROTO)', async () => {
    const sock = join(tmp, 'no-fd.sock');
    const listenFd = fuse.listenUnix(sock);
    const sender = child(process.execPath, ['-e', `require('node:net').connect(${JSON.stringify(sock)}, function () { this.end('bytes but no fd') })`]);
    try {
      throwsErrno(() => fuse.acceptFd(listenFd, 30_000), 'EPROTO', 'recvmsg');
    } finally {
      closeSync(listenFd);
    }
    assert.equal((await sender.done).code, 0);
  });

  for (const [label, address] of [
    ['a path', join(tmp, 'notify.sock')],
    ['an abstract name', `@tocfs-test-notify-${process.pid}`],
  ] as const) {
    it(`notifyFdStore sends the message with the fd attached to ${label}`, { skip: !hasPython && 'no python3 (with socket.recv_fds) to play systemd' }, async () => {
      const file = join(tmp, 'stored');
      writeFileSync(file, Buffer.alloc(1234));
      const bindTo = address.startsWith('@') ? `'\\0' + ${JSON.stringify(address.slice(1))}` : JSON.stringify(address);
      // systemd's side of NOTIFY_SOCKET: a datagram socket that takes the fds with the message.
      const systemd = child('python3', [
        '-c',
        `import os, socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.bind(${bindTo})\nprint('ready', flush=True)\nmsg, fds, flags, addr = socket.recv_fds(s, 4096, 4)\nprint(repr(msg.decode()), len(fds), os.fstat(fds[0]).st_size, flush=True)`,
      ]);
      await systemd.line('ready');
      const fd = openSync(file, 'r');
      try {
        fuse.notifyFdStore(address, 'FDSTORE=1\nFDNAME=fuse', fd);
      } finally {
        closeSync(fd);
      }
      const exit = await systemd.done;
      assert.equal(exit.code, 0, exit.stderr);
      assert.equal(exit.stdout, `ready\n'FDSTORE=1\\nFDNAME=fuse' 1 1234\n`);
    });
  }

  it('notifyFdStore with a null fd sends the message alone (FDSTOREREMOVE)', { skip: !hasPython && 'no python3 (with socket.recv_fds) to play systemd' }, async () => {
    const address = join(tmp, 'notify-remove.sock');
    const systemd = child('python3', [
      '-c',
      `import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.bind(${JSON.stringify(address)})\nprint('ready', flush=True)\nmsg, fds, flags, addr = socket.recv_fds(s, 4096, 4)\nprint(repr(msg.decode()), len(fds), flush=True)`,
    ]);
    await systemd.line('ready');
    fuse.notifyFdStore(address, 'FDSTOREREMOVE=1\nFDNAME=tocfs-state', null);
    const exit = await systemd.done;
    assert.equal(exit.code, 0, exit.stderr);
    assert.equal(exit.stdout, `ready\n'FDSTOREREMOVE=1\\nFDNAME=tocfs-state' 0\n`);
  });

  it('socketPair + receiveFd: what a child sends on its fd 3 (as fusermount answers on _FUSE_COMMFD) arrives with the descriptor', { skip: !hasPython && 'no python3 (with socket.send_fds) to play fusermount' }, async () => {
    const file = join(tmp, 'sent-by-child');
    writeFileSync(file, Buffer.alloc(4321));
    const [ours, theirs] = fuse.socketPair();
    const sender = spawn('python3', ['-c', `import os, socket\ns = socket.socket(fileno=3)\nsocket.send_fds(s, [b'\\0'], [os.open(${JSON.stringify(file)}, os.O_RDONLY)])`], { stdio: ['ignore', 'ignore', 'pipe', theirs] });
    closeSync(theirs);
    let stderr = '';
    sender.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exit = await new Promise<number | null>((res) => sender.once('exit', res));
    assert.equal(exit, 0, stderr);
    try {
      const got = fuse.receiveFd(ours, 10_000);
      try {
        assert.deepEqual(got.payload, Buffer.from([0]));
        assert.equal(fstatSync(got.fd).size, 4321, 'the file the child opened');
      } finally {
        closeSync(got.fd);
      }
    } finally {
      closeSync(ours);
    }
  });

  it('receiveFd: EPROTO when the peer closes without sending a descriptor', () => {
    const [ours, theirs] = fuse.socketPair();
    closeSync(theirs);
    try {
      throwsErrno(() => fuse.receiveFd(ours, 10_000), 'EPROTO', 'recvmsg');
    } finally {
      closeSync(ours);
    }
  });

  it('notifyFdStore with nobody listening fails naming the socket', () => {
    const err = throwsErrno(() => fuse.notifyFdStore(join(tmp, 'no-systemd.sock'), 'FDSTORE=1', 0), 'ENOENT', 'sendmsg');
    assert.match(err.message, /no-systemd\.sock/);
  });

  it('startReading: batches, an exception from onRequests is an uncaught exception, EOF ends with null', async () => {
    // fd 0 of the child is its end of a socket pair: read() gives what the parent writes, 0 at EOF.
    const reader = nodeChild(`
      process.on('uncaughtException', (err) => console.log('uncaught ' + err.message));
      dev.startReading(0, 4096, (batch, error) => {
        if (batch === null) return console.log('end ' + (error ? error.code : 'eof'));
        console.log('batch ' + batch.map((b) => b.toString()).join('|'));
        throw new Error('boom');
      });
      console.log('ready');
    `);
    await reader.line('ready');
    reader.stdin.write('hello');
    await reader.line('uncaught boom');
    reader.stdin.end();
    // It exits by itself: after the end the poll handle no longer holds the event loop.
    const exit = await reader.done;
    assert.equal(exit.code, 0, exit.stderr);
    assert.deepEqual(exit.stdout.trim().split('\n'), ['ready', 'batch hello', 'uncaught boom', 'end eof']);
  });

  it('startReading: stop() lets the event loop end and leaves the fd open', async () => {
    const reader = nodeChild(`
      import { fstatSync } from 'node:fs';
      const reading = dev.startReading(0, 4096, () => console.log('unexpected call'));
      setTimeout(() => {
        reading.stop();
        reading.stop();
        console.log('stopped, fd 0 is ' + (fstatSync(0).isSocket() ? 'open' : 'something else'));
      }, 100);
    `);
    // stdin stays open and silent: only stop() can let the child end.
    const timer = setTimeout(() => reader.kill(), 20_000);
    const exit = await reader.done;
    clearTimeout(timer);
    assert.equal(exit.code, 0, exit.stderr);
    assert.equal(exit.stdout, 'stopped, fd 0 is open\n');
  });

  describe('on a FUSE mount', { skip: !canMount && 'needs root and /dev/fuse' }, () => {
    /** A fresh mount (INIT not answered) for `body`, taken down lazily however `body` ends. */
    async function withMount(name: string, body: (mnt: string, fd: number) => Promise<void> | void): Promise<void> {
      const mnt = mkdtempSync(join(tmp, `${name}-`));
      const fd = fuse.mount(mnt, 'tocfs-test', 'fuse.tocfs', true, 'default_permissions');
      try {
        await body(mnt, fd);
      } finally {
        if (mounted(mnt)) {
          try {
            fuse.unmount(mnt, true);
          } catch {
            // Reported by the assertion that failed first.
          }
        }
        closeSync(fd);
      }
    }

    it('mount returns a /dev/fuse fd, FUSE_INIT arrives, and a lazy unmount ends the reading with null (ENODEV)', async () => {
      await withMount('init', async (mnt, fd) => {
        assert.ok(fd > 2);
        const line = mounted(mnt);
        assert.ok(line, `${mnt} is in /proc/self/mountinfo`);
        const fields = line.split(' - ')[1]!.split(' ');
        assert.deepEqual(fields.slice(0, 2), ['fuse.tocfs', 'tocfs-test']);
        assert.match(fields[2]!, /^ro,.*user_id=0,group_id=0/);

        const calls: Array<{ batch: Buffer[] | null; error?: FuseDevError }> = [];
        const reading = fuse.startReading(fd, 128 * 1024 + 4096, (batch, error) => calls.push({ batch, error }));
        await waitFor('FUSE_INIT', () => calls.length > 0);
        const first = calls[0]!.batch;
        assert.ok(first !== null && first.length === 1, `one request: ${JSON.stringify(calls)}`);
        const init = first[0]!;
        assert.ok(init.length >= IN_HEADER + 16, `${init.length} bytes: a header and fuse_init_in`);
        assert.equal(init.readUInt32LE(0), init.length, 'len is the buffer length');
        assert.equal(init.readUInt32LE(4), FUSE_INIT);
        assert.ok(init.readBigUInt64LE(8) > 0n, 'a unique id');
        assert.equal(init.readUInt32LE(IN_HEADER), 7, 'protocol major version 7');

        // Unanswered INIT or not, a lazy unmount detaches it; the kernel then aborts the connection.
        fuse.unmount(mnt, true);
        await waitFor('the end of the reading', () => calls.at(-1)?.batch === null);
        assert.equal(calls.length, 2);
        assert.equal(calls[1]!.error, undefined, 'ENODEV is the normal end: no error');
        assert.equal(mounted(mnt), undefined, `${mnt} is gone from /proc/self/mountinfo`);
        reading.stop(); // after the end: nothing to do
      });
    });

    it('before INIT: the passthrough ioctls are refused, and a reply to no request returns a negative errno', async () => {
      await withMount('refused', (_mnt, fd) => {
        const file = openSync(join(ROOT, 'package.json'), 'r');
        try {
          // The kernel refuses before INIT negotiated FUSE_PASSTHROUGH (6.18 here: EPERM). Not
          // ENOTTY: that would mean the ioctl numbers are wrong.
          const notTTY = (e: FuseDevError) => assert.notEqual(e.code, 'ENOTTY', e.message);
          const open = throwsErrno(() => fuse.backingOpen(fd, file), notTTY, 'ioctl');
          assert.match(open.message, /FUSE_DEV_IOC_BACKING_OPEN/);
          const close = throwsErrno(() => fuse.backingClose(fd, 1), notTTY, 'ioctl');
          assert.match(close.message, /FUSE_DEV_IOC_BACKING_CLOSE/);
        } finally {
          closeSync(file);
        }
        // struct fuse_out_header: len u32, error i32, unique u64; no request 12345 is pending.
        const reply = Buffer.alloc(16);
        reply.writeUInt32LE(16, 0);
        reply.writeBigUInt64LE(12345n, 8);
        assert.equal(fuse.write(fd, [reply]), -constants.errno.ENOENT);
        assert.equal(fuse.write(fd, [reply.subarray(0, 6), reply.subarray(6)]), -constants.errno.ENOENT, 'the same in two pieces');
        reply.writeUInt32LE(99, 0);
        assert.equal(fuse.write(fd, [reply]), -constants.errno.EINVAL, 'a length that is not the write size');
        assert.equal(fuse.write(987654, [reply]), -constants.errno.EBADF, 'no such fd');
      });
    });
  });
});
