/**
 * The daemon `tocfs mount` starts, entered without the CLI: the parent has parsed the command
 * line and the configuration and hands over the resulting ServeOptions (TOCFSD_MOUNT, JSON), so
 * the daemon loads neither yargs nor the config loader and starts serving at once. Its command
 * line stays `tocfs mount IMAGE MOUNTPOINT --foreground …`, which means the same when run by hand.
 */
import type { LogFormat } from '../log.js';
import type { ServeOptions } from '../daemon/serve-mount.js';

export const MOUNT_DAEMON_ENV = 'TOCFSD_MOUNT';

/** What the parent hands over: the ServeOptions without the logger, and how to log. */
export interface MountDaemonOptions {
  serve: Omit<ServeOptions, 'logger'>;
  log: { level: string; format: LogFormat };
}

export async function runMountDaemon(json: string): Promise<void> {
  delete process.env[MOUNT_DAEMON_ENV];
  const { configureLogging, logger } = await import('../log.js');
  const { TocfsError } = await import('../errors.js');
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
    const { serveMount } = await import('../daemon/serve-mount.js');
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
