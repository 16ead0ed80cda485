/**
 * `tocfs store [STOREDIR]`: the additional layer store Podman and CRI-O read
 * (storage.conf `additionallayerstores = ["STOREDIR:ref"]`). Returns once the store answers,
 * leaving a daemon serving it (`--foreground` stays attached, for systemd);
 * `tocfs store status [STOREDIR]` shows what it serves; `tocfs unmount STOREDIR` ends it.
 */
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { currentConfig, settingOption } from '../../config/index.js';
import { hasReadyChannel, startDaemon } from '../../daemon/daemonize.js';
import { ensureRuntimeDir, mountFiles } from '../../daemon/state.js';
import { TocfsError } from '../../errors.js';
import { logger } from '../../log.js';
import { memoryTierFor } from '../../config/memory-tier.js';
import { metricsAddressFor } from '../../config/metrics-address.js';
import { DEFAULT_LOOKUP_TIMEOUT_MS, DEFAULT_NEGATIVE_TTL_MS } from '../../store/defaults.js';
import { formatStatus, readStatus } from '../../daemon/store-status.js';
import { withExamples } from '../help.js';
import { openImageOptions, profileSettings, withCacheOptions } from '../options.js';
import type { FuseSessionKind } from '../../fs/mount.js';

interface StoreArgs {
  storedir?: string;
  foreground: boolean;
  takeover: boolean;
  'cache-dir'?: string;
  'tls-verify'?: boolean;
  'metrics-address'?: string;
  'lookup-timeout': number;
  'negative-ttl': number;
}

interface StatusArgs {
  storedir?: string;
  json: boolean;
}

function storeDirOf(arg: string | undefined): string {
  return resolve(arg ?? String(currentConfig().values['store.dir']));
}

/** The daemon's own command line: the same store, absolute paths, effective settings spelled out. */
function daemonArgs(argv: StoreArgs, storeDir: string): string[] {
  const config = currentConfig();
  const v = config.values;
  const args = ['store', storeDir, '--foreground', '--cache-dir', resolve(String(v['cache.dir'])), `--tls-verify=${v['registry.tls_verify'] !== false}`];
  args.push('--log-level', String(v['log.level']), '--lookup-timeout', String(argv['lookup-timeout']), '--negative-ttl', String(argv['negative-ttl']));
  args.push('--metrics-address', metricsAddressFor('store', config) ?? '');
  if (config.file) args.push('--config', config.file);
  if (argv.takeover) args.push('--takeover');
  return args;
}

const serveCommand: CommandModule<object, StoreArgs> = {
  command: '$0 [storedir]',
  describe: 'Serve the additional layer store at STOREDIR',
  builder: (y: Argv) =>
    withExamples(
      withCacheOptions(y)
        .positional('storedir', { type: 'string', describe: 'Mount point of the store (created if missing)', defaultDescription: 'store.dir: /var/lib/tocfs/store as root' })
        .option('tls-verify', settingOption('registry.tls_verify'))
        .option('foreground', { type: 'boolean', default: false, describe: 'Stay attached and serve until SIGINT/SIGTERM (systemd Type=notify: READY=1 once the store answers)' })
        .option('metrics-address', settingOption('metrics.address'))
        .option('takeover', {
          type: 'boolean',
          default: false,
          describe: 'Take the store over from the tocfs serving it now, without unmounting: running containers never notice (restart or upgrade; daemon.fuse_session = tocfs)',
        })
        .option('lookup-timeout', { type: 'number', default: DEFAULT_LOOKUP_TIMEOUT_MS, describe: 'Longest a lookup waits for an image or layer to resolve (ms); slower ones answer "not here" and Podman pulls normally' })
        .option('negative-ttl', { type: 'number', default: DEFAULT_NEGATIVE_TTL_MS, describe: 'How long a layer the store cannot serve is remembered as such (ms)' }) as unknown as Argv<StoreArgs>,
      [
        ['$0 store /var/lib/tocfs/store', 'Start the store; then set additionallayerstores = ["/var/lib/tocfs/store:ref"] in storage.conf'],
        ['$0 store --foreground --tls-verify=false /tmp/store', 'Serve in the foreground, allowing plain-HTTP registries'],
        ['$0 store status /var/lib/tocfs/store', 'What the store serves and how much of each layer was fetched'],
        ['$0 store --takeover /var/lib/tocfs/store', 'Restart (or upgrade) the store under running containers'],
      ],
      'Podman asks for <STOREDIR>/<base64 image ref>/<layer digest or TOC digest>/{diff,info,blob}. Layers without a TOC (plain gzip/zstd) are served only to Podman before 5.1 and only with a seekable index (built here by tocfs index, or published in a repository index.trust names); otherwise Podman pulls them itself. Registry credentials come from the same files Podman reads (auth.json, ~/.docker/config.json). Debug views: <ref dir>/manifest, <ref dir>/config, <layer dir>/chain/. End the store with tocfs unmount STOREDIR (or SIGTERM).',
    ),
  handler: async (argv) => {
    const storeDir = storeDirOf(argv.storedir);
    if (!argv.foreground) {
      await ensureRuntimeDir();
      await startDaemon({ args: daemonArgs(argv, storeDir), logFile: mountFiles(storeDir).log, appendLog: argv.takeover });
      process.stdout.write(`tocfs store serving ${storeDir}\n`);
      return;
    }
    // Loaded here, not at the top: the command that only starts the daemon stays quick.
    const { serveStore } = await import('../../daemon/serve-store.js');
    const config = currentConfig();
    const open = openImageOptions({});
    const metricsAddress = metricsAddressFor('store', config);
    await serveStore({
      storeDir,
      cacheDir: open.cacheDir!,
      ...(open.cacheMaxBytes !== undefined ? { cacheMaxBytes: open.cacheMaxBytes } : {}),
      cacheMemoryBytes: memoryTierFor('store', config),
      ...(open.memoryBudget !== undefined ? { memoryBudget: open.memoryBudget } : {}),
      ...(open.fetch ? { fetch: open.fetch } : {}),
      source: { tlsVerify: open.tlsVerify !== false, ...(open.registry ? { registry: open.registry } : {}) },
      logger: logger(),
      ...(metricsAddress ? { metricsAddress } : {}),
      lookupTimeoutMs: argv['lookup-timeout'],
      negativeTtlMs: argv['negative-ttl'],
      prefetch: config.values['prefetch.mode'] === 'none' ? 'none' : 'landmark',
      profiles: profileSettings(),
      allowOther: config.values['store.allow_other'],
      fuse: { session: config.values['daemon.fuse_session'] as FuseSessionKind, passthrough: config.values['daemon.passthrough'] },
      ...(argv.takeover ? { takeover: true } : {}),
      idMap: config.values['store.id_map'],
      indexTrust: config.values['index.trust'],
      checkpointSpacing: config.values['index.checkpoint_spacing'],
      indexCheckDelayMs: config.values['index.check_delay'],
      ...(hasReadyChannel() ? { logFile: mountFiles(storeDir).log } : {}),
    });
    logger().flush();
    // fuse-native keeps a handle on the event loop after unmounting.
    setTimeout(() => process.exit(process.exitCode ?? 0), 100).unref();
  },
};

const statusCommand: CommandModule<object, StatusArgs> = {
  command: 'status [storedir]',
  describe: 'Show the layers a running store serves: uses, bytes fetched, last error',
  builder: (y: Argv) =>
    withExamples(
      y
        .positional('storedir', { type: 'string', describe: 'Mount point of the store', defaultDescription: 'store.dir' })
        .option('json', { type: 'boolean', default: false, describe: 'Print the status document as JSON' }) as unknown as Argv<StatusArgs>,
      [
        ['$0 store status /var/lib/tocfs/store', 'Table of served layers'],
        ['$0 store status --json /var/lib/tocfs/store', 'The same as JSON (refreshed by the store every 2 s)'],
      ],
    ),
  handler: async (argv) => {
    const storeDir = storeDirOf(argv.storedir);
    const doc = await readStatus(storeDir);
    if (!doc) throw new TocfsError(`no tocfs store is running at ${storeDir}`, 'ENOSTORE');
    process.stdout.write(argv.json ? JSON.stringify(doc, null, 2) + '\n' : formatStatus(doc) + '\n');
  },
};

export const storeCommand: CommandModule<object, object> = {
  command: 'store',
  describe: 'Serve the additional layer store Podman and CRI-O read (lazy pulls)',
  builder: (y: Argv) => y.command(statusCommand).command(serveCommand) as Argv,
  handler: () => undefined,
};
