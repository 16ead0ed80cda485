/**
 * `tocfs mount IMAGE MOUNTPOINT`: the image's root filesystem, read-only and lazily fetched.
 * Returns once the mount is ready, leaving a daemon serving it (`--foreground` stays
 * attached instead, for systemd); `tocfs unmount MOUNTPOINT` ends it.
 */
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { currentConfig, settingOption } from '../../config/index.js';
import { hasReadyChannel, startDaemon } from '../../daemon/daemonize.js';
import { takeEarlyDaemon } from '../../daemon/spawn-daemon.js';
import type { PrefetchMode, ServeOptions } from '../../daemon/serve-mount.js';
import type { FuseSessionKind } from '../../fs/mount.js';
import { MOUNT_DAEMON_ENV, type MountDaemonOptions } from '../mount-daemon.js';
import { ensureRuntimeDir, mountFiles } from '../../daemon/state.js';
import { metricsAddressFor } from '../../config/metrics-address.js';
import { formatReference, parseReference } from '../../reference.js';
import { logger } from '../../log.js';
import { withExamples } from '../help.js';
import { openImageOptions, profileSettings, withCacheOptions, withImageOptions } from '../options.js';

interface MountArgs {
  image: string;
  mountpoint: string;
  layer?: string;
  foreground: boolean;
  takeover: boolean;
  prefetch?: PrefetchMode;
  'cache-dir'?: string;
  'tls-verify'?: boolean;
  platform?: string;
  'log-level'?: string;
}

/** The daemon's own command line: the same mount, absolute paths, effective settings spelled out. */
function daemonArgs(argv: MountArgs, mountpoint: string): string[] {
  const v = currentConfig().values;
  const args = ['mount', formatReference(parseReference(argv.image)), mountpoint, '--foreground'];
  args.push('--prefetch', String(v['prefetch.mode']), '--cache-dir', resolve(String(v['cache.dir'])), `--tls-verify=${v['registry.tls_verify'] !== false}`);
  args.push('--log-level', String(v['log.level']), '--metrics-address', metricsAddressFor('mount', currentConfig()) ?? '');
  const file = currentConfig().file;
  if (file) args.push('--config', file);
  if (argv.platform) args.push('--platform', argv.platform);
  if (argv.layer) args.push('--layer', argv.layer);
  if (argv.takeover) args.push('--takeover');
  return args;
}

/** What serveMount is to do, from the command line and the effective configuration. */
function serveOptions(argv: MountArgs, mountpoint: string, image: string): Omit<ServeOptions, 'logger'> {
  const config = currentConfig();
  const v = config.values;
  const metricsAddress = metricsAddressFor('mount', config);
  return {
    ...(metricsAddress ? { metricsAddress } : {}),
    mount: { readAheadKb: Math.floor(v['mount.read_ahead'] / 1024), allowOther: v['mount.allow_other'], session: v['daemon.fuse_session'] as FuseSessionKind, passthrough: v['daemon.passthrough'] },
    image,
    mountpoint,
    ...(argv.layer ? { layer: argv.layer } : {}),
    ...(argv.takeover ? { takeover: true } : {}),
    prefetch: (argv.prefetch ?? v['prefetch.mode']) as PrefetchMode,
    open: openImageOptions(argv),
    profiles: profileSettings(),
  };
}

/**
 * The same for the daemon (cli/mount-daemon.ts), which starts in / without parsing anything:
 * the reference and every path absolute, as daemonArgs spells them for its command line.
 */
function daemonOptions(argv: MountArgs, mountpoint: string, logFile: string): MountDaemonOptions {
  const serve = serveOptions(argv, mountpoint, formatReference(parseReference(argv.image)));
  const open = serve.open;
  const abs = (p: string | undefined): string | undefined => (p === undefined ? undefined : resolve(p));
  const registry = open.registry && { ...open.registry, ...definedOnly({ registriesConf: abs(open.registry.registriesConf), authFile: abs(open.registry.authFile), certsDir: abs(open.registry.certsDir) }) };
  const v = currentConfig().values;
  return {
    serve: { ...serve, logFile, open: { ...open, cacheDir: resolve(String(v['cache.dir'])), ...(registry ? { registry } : {}) } },
    log: { level: String(v['log.level']), format: v['log.format'] },
  };
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined)) as Partial<T>;
}

export const mountCommand: CommandModule<object, MountArgs> = {
  command: 'mount <image> <mountpoint>',
  describe: 'Mount an image read-only, fetching file contents only when they are read',
  builder: (y: Argv) =>
    withExamples(
      withCacheOptions(withImageOptions(y))
        .positional('image', { type: 'string', demandOption: true, describe: 'oci:DIR[:TAG] or [docker://]HOST/REPO[:TAG][@DIGEST]' })
        .positional('mountpoint', { type: 'string', demandOption: true, describe: 'An existing empty directory' })
        .option('layer', { type: 'string', describe: 'Mount this layer\'s own tree (digest or unique prefix) instead of the merged image' })
        .option('foreground', { type: 'boolean', default: false, describe: 'Stay attached and serve until SIGINT/SIGTERM (for systemd)' })
        .option('takeover', {
          type: 'boolean',
          default: false,
          describe: 'Take the mount over from the tocfs serving it now, without unmounting: running readers never notice (daemon.fuse_session = tocfs)',
        })
        .option('prefetch', settingOption('prefetch.mode'))
        .option('metrics-address', settingOption('metrics.address')) as unknown as Argv<MountArgs>,
      [
        ['$0 mount docker://quay.io/podman/hello /mnt/hello', 'Mount an image from a registry'],
        ['$0 mount --prefetch all oci:./myimage /mnt/img', 'Mount, then fetch everything in the background'],
        ['$0 mount --takeover docker://quay.io/podman/hello /mnt/hello', 'Restart (or upgrade) the daemon of a mount under its readers'],
        ['$0 unmount /mnt/hello', 'End the mount'],
      ],
      'The daemon logs to a file under the runtime directory (/run/tocfs/mounts as root); tocfs unmount names it when it fails.',
    ),
  handler: async (argv) => {
    const mountpoint = resolve(argv.mountpoint);
    if (!argv.foreground) {
      await ensureRuntimeDir();
      const logFile = mountFiles(mountpoint).log;
      const options = daemonOptions(argv, mountpoint, logFile);
      // Spawned by cli/entry.ts before the command line was parsed, and loaded by now.
      const early = takeEarlyDaemon();
      if (early) await early.hand(options, logFile);
      else await startDaemon({ args: daemonArgs(argv, mountpoint), logFile, appendLog: argv.takeover, env: { [MOUNT_DAEMON_ENV]: JSON.stringify(options) } });
      return;
    }
    // Loaded here, not at the top: the command that only starts the daemon stays quick.
    const { serveMount } = await import('../../daemon/serve-mount.js');
    await serveMount({ ...serveOptions(argv, mountpoint, argv.image), logger: logger(), ...(hasReadyChannel() ? { logFile: mountFiles(mountpoint).log } : {}) });
    logger().flush();
    // fuse-native keeps a handle on the event loop after unmounting.
    setTimeout(() => process.exit(process.exitCode ?? 0), 100).unref();
  },
};
