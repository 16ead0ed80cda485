/**
 * The daemon `tocfs mount` starts, entered without the CLI: the parent has parsed the command
 * line and the configuration and hands over the resulting ServeOptions, so the daemon loads
 * neither yargs nor the config loader and starts serving at once. Its command line stays
 * `tocfs mount IMAGE MOUNTPOINT … --foreground`, which means the same when run by hand (from the
 * directory `tocfs mount` ran in, for an early daemon, whose arguments are the user's own).
 *
 * The options come in TOCFSD_MOUNT (JSON), or, for a daemon spawned early
 * (daemon/spawn-daemon.ts), as one JSON line on fd 3 once the parent has them
 * (TOCFSD_MOUNT=fd); such a daemon loads its code while it waits.
 */
import { readSync } from 'node:fs';
import type { LogFormat } from '../log.js';
import type { ServeOptions } from '../daemon/serve-mount.js';
import { READY_FD } from '../daemon/spawn-daemon.js';

export const MOUNT_DAEMON_ENV = 'TOCFSD_MOUNT';
/** TOCFSD_MOUNT's value for an early daemon: the options follow on fd 3. */
export const OPTIONS_ON_READY_FD = 'fd';

/** What the parent hands over: the ServeOptions without the logger, and how to log. */
export interface MountDaemonOptions {
  serve: Omit<ServeOptions, 'logger'>;
  log: { level: string; format: LogFormat };
}

/** Blocks for one line on `fd`; undefined at its end (the parent needed no daemon after all). */
function readLine(fd: number): string | undefined {
  const parts: Buffer[] = [];
  const buf = Buffer.alloc(64 * 1024);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return undefined;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      continue;
    }
    if (n === 0) return undefined;
    const nl = buf.indexOf(0x0a);
    if (nl >= 0 && nl < n) {
      parts.push(Buffer.from(buf.subarray(0, nl)));
      return Buffer.concat(parts).toString('utf8');
    }
    parts.push(Buffer.from(buf.subarray(0, n)));
  }
}

export async function runMountDaemon(source: string): Promise<void> {
  delete process.env[MOUNT_DAEMON_ENV];
  const [{ configureLogging, logger }, { TocfsError }, { serveMount }] = await Promise.all([import('../log.js'), import('../errors.js'), import('../daemon/serve-mount.js')]);
  let json = source;
  if (source === OPTIONS_ON_READY_FD) {
    // Loaded while the parent parses: the registry client (undici), unless the image is a local layout.
    if (!process.argv.some((a) => a.startsWith('oci:'))) await import('../image/open.js').then((m) => m.preloadRegistrySource()).catch(() => undefined);
    const line = readLine(READY_FD);
    if (line === undefined) return;
    json = line;
  }
  let opts: MountDaemonOptions;
  try {
    opts = JSON.parse(json) as MountDaemonOptions;
  } catch (e) {
    process.stderr.write(`tocfs: unreadable ${MOUNT_DAEMON_ENV}: ${(e as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  // A daemon logs to stdout (the log file), as `mount --foreground` does.
  configureLogging({ ...opts.log, fd: 1 });
  try {
    await serveMount({ ...opts.serve, logger: logger() });
  } catch (e) {
    const err = e as Error;
    if (err instanceof TocfsError) process.stderr.write(`tocfs: ${err.message}\n`);
    else {
      logger().error({ err }, 'unexpected error');
      process.stderr.write(`tocfs: unexpected error: ${err.stack ?? err.message}\n`);
    }
    process.exitCode = 1;
  }
  logger().flush();
  // fuse-native keeps a handle on the event loop after unmounting.
  setTimeout(() => process.exit(process.exitCode ?? 0), 100).unref();
}
