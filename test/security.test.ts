/**
 * Checks behind statements of docs/security.md that no other test makes: the mount flags a
 * hostile image cannot get around (nosuid, nodev, ro, default_permissions), and credentials
 * never sent to a bearer realm over plain HTTP when the registry is reached over TLS.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Errno, type FuseOperations, type StatInfo } from '../src/fs/fuse-binding.js';
import { mountFs } from '../src/fs/mount.js';
import { createLogger } from '../src/log.js';
import { AuthError, Authenticator } from '../src/registry/auth.js';
import { DEFAULT_CERTS_DIR, DEFAULT_TIMEOUTS } from '../src/registry/options.js';
import { Transports } from '../src/registry/transport.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-security-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** The mount options of the mount at `mnt`: per-mount flags and the filesystem's own. */
async function mountOptions(mnt: string): Promise<{ flags: string[]; super: string[] }> {
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const f = line.split(' ');
    if (f[4] !== resolve(mnt)) continue;
    const sep = f.indexOf('-', 6);
    return { flags: f[5]!.split(','), super: (f[sep + 3] ?? '').split(',') };
  }
  throw new Error(`no mount at ${mnt}`);
}

describe('security: mount flags', () => {
  for (const session of ['tocfs', 'fuse-native'] as const)
  it(`a tocfs mount (${session} session) is ro, nosuid and nodev, with the kernel checking permissions (setuid files and device nodes of an image give nothing)`, async () => {
    const mnt = await mkdtemp(join(tmp, 'mnt-'));
    const now = { sec: 0, nsec: 0 };
    const root: StatInfo = { mode: 0o040755, uid: 0, gid: 0, size: 0, nlink: 2, ino: 1, rdev: 0, blksize: 4096, blocks: 0, atime: now, mtime: now, ctime: now };
    const ops: FuseOperations = {
      getattr: (path, cb) => (path === '/' ? cb(0, root) : cb(Errno.ENOENT)),
      readdir: (path, cb) => (path === '/' ? cb(0, [], []) : cb(Errno.ENOENT)),
      statfs: (_path, cb) => cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 1, ffree: 0, favail: 0, fsid: 0, flag: 0, namemax: 255 }),
    } as FuseOperations;
    const m = await mountFs(mnt, ops, { label: 'security-test', logger: createLogger({ level: 'warn' }), session });
    try {
      const o = await mountOptions(mnt);
      for (const flag of ['ro', 'nosuid', 'nodev']) assert.ok(o.flags.includes(flag), `${flag} in ${o.flags.join(',')}`);
      assert.ok(o.super.includes('default_permissions'), `default_permissions in ${o.super.join(',')}`);
    } finally {
      await m.unmount();
    }
  });
});

describe('security: credentials', () => {
  async function authenticator(insecure: boolean): Promise<Authenticator> {
    const authFile = join(tmp, `auth-${insecure}.json`);
    await writeFile(authFile, JSON.stringify({ auths: { 'registry.test:5000': { auth: Buffer.from('user:s3cret-pass').toString('base64') } } }), { mode: 0o600 });
    const transports = new Transports({ certsDir: DEFAULT_CERTS_DIR, connections: 1, timeouts: { ...DEFAULT_TIMEOUTS, connectMs: 2000 } });
    return new Authenticator({ registry: 'registry.test:5000', repository: 'app', authFiles: [authFile], transports, insecure });
  }

  it('a TLS registry whose challenge names a plain-HTTP realm gets no credentials sent there', async () => {
    const auth = await authenticator(false);
    await assert.rejects(auth.unauthorized('Bearer realm="http://127.0.0.1:9/token",service="registry.test"', undefined), (e: Error) => {
      assert.ok(e instanceof AuthError, e.message);
      assert.match(e.message, /registry\.test:5000: bearer realm http:\/\/127\.0\.0\.1:9 is not https; tocfs does not send the credentials from .*auth-false\.json.* over http \(mark the registry insecure/);
      assert.ok(!e.message.includes('s3cret'), 'the message holds no secret');
      return true;
    });
    assert.equal(auth.tokenRequests, 0, 'no token request was made');
  });

  it('an insecure registry (plain HTTP already) may use a plain-HTTP realm', async () => {
    const auth = await authenticator(true);
    await assert.rejects(auth.unauthorized('Bearer realm="http://127.0.0.1:9/token",service="registry.test"', undefined), (e: Error) => {
      assert.doesNotMatch(e.message, /is not https/);
      return true;
    });
    assert.equal(auth.tokenRequests, 1, 'the token request was attempted');
  });
});
