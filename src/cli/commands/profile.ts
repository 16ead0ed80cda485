/**
 * `tocfs profile record|show|export|import|rm`: start-up profiles, the files and ranges a
 * container reads at start (docs/profiles.md). Mounts and the store record and replay them by
 * themselves; these commands make one on purpose (CI), look at them and move them around.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import type { FuseSessionKind } from '../../fs/mount.js';
import { currentConfig, humanBytes } from '../../config/index.js';
import { isDigest } from '../../digest.js';
import { TocfsError } from '../../errors.js';
import { logger } from '../../log.js';
import { profileReadBytes, serializeProfile, type Profile } from '../../profile/profile.js';
import { ProfileStore, readProfileFile } from '../../profile/store.js';
import { withExamples } from '../help.js';
import { profilePushCommand } from './profile-push.js';
import { openImageOptions, sourceOptions, withCacheOptions, withImageOptions } from '../options.js';

interface ProfileArgs {
  image: string;
  file?: string;
  json: boolean;
  output?: string;
  chroot: boolean;
  cmd?: string[];
  'cache-dir'?: string;
  'tls-verify'?: boolean;
  platform?: string;
}

function profileStore(): ProfileStore {
  return new ProfileStore(resolve(currentConfig().values['cache.dir']), logger());
}

/** The manifest digest an argument names: `sha256:…` as it is, an image reference resolved. */
async function manifestDigestOf(argv: ProfileArgs): Promise<string> {
  if (isDigest(argv.image)) return argv.image;
  const { openImageSource } = await import('../../image/open.js');
  const source = await openImageSource(argv.image, sourceOptions(argv));
  try {
    return (await source.resolve()).manifestDigest;
  } finally {
    await source.close();
  }
}

/** The profile an argument names: a profile file, or the stored profile of an image. */
async function profileOf(argv: ProfileArgs): Promise<{ profile: Profile; source: string }> {
  const asFile = await stat(argv.image).catch(() => undefined);
  if (asFile?.isFile()) return { profile: await readProfileFile(argv.image), source: argv.image };
  const digest = await manifestDigestOf(argv);
  const store = profileStore();
  const profile = await store.load(digest);
  if (!profile) throw new TocfsError(`no start-up profile of ${argv.image} (${digest}) in ${store.dir}: run the image once through tocfs mount or tocfs store, or make one with tocfs profile record`, 'ENOENT');
  return { profile, source: join(store.dir, `${digest.slice('sha256:'.length)}.json`) };
}

export function describeProfile(profile: Profile, source: string): string {
  const files = new Set(profile.reads.map((r) => `${r.layer}\n${r.path}`));
  const last = profile.reads.at(-1)?.atMs ?? 0;
  const lines = [
    `profile ${source}`,
    `  image     ${profile.image.reference} (${profile.image.manifestDigest})`,
    `  created   ${profile.created}, recording ended by ${profile.recording.endedBy} (idle ${profile.recording.idleMs} ms, window ${profile.recording.windowMs} ms)`,
    `  reads     ${profile.reads.length} ranges of ${files.size} files, ${humanBytes(profileReadBytes(profile))} in the first ${(last / 1000).toFixed(1)} s`,
    `  layers    ${profile.layers.length}`,
  ];
  for (const r of profile.reads.slice(0, 20)) lines.push(`  ${String(r.atMs).padStart(7)} ms  layer ${r.layer}  ${r.path}  [${r.offset}, +${r.length})`);
  if (profile.reads.length > 20) lines.push(`  … ${profile.reads.length - 20} more (--json for all)`);
  return lines.join('\n');
}

const imageArg = (y: Argv) => y.positional('image', { type: 'string', demandOption: true, describe: 'An image reference, its manifest digest (sha256:…), or (show) a profile file' });

const showCommand: CommandModule<object, ProfileArgs> = {
  command: 'show <image>',
  describe: 'Show the start-up profile of an image (or of a profile file)',
  builder: (y) =>
    withExamples(withCacheOptions(withImageOptions(imageArg(y))).option('json', { type: 'boolean', default: false, describe: 'Print the profile itself' }) as unknown as Argv<ProfileArgs>, [
      ['$0 profile show docker://registry.example/app:v1', 'What app:v1 read at start'],
      ['$0 profile show ./app.profile.json', 'A profile file'],
    ]),
  handler: async (argv) => {
    const { profile, source } = await profileOf(argv);
    process.stdout.write(argv.json ? serializeProfile(profile) : `${describeProfile(profile, source)}\n`);
  },
};

const exportCommand: CommandModule<object, ProfileArgs> = {
  command: 'export <image>',
  describe: 'Write the start-up profile of an image as JSON (stdout or --output)',
  builder: (y) =>
    withExamples(withCacheOptions(withImageOptions(imageArg(y))).option('output', { alias: 'o', type: 'string', describe: 'File to write instead of stdout' }) as unknown as Argv<ProfileArgs>, [
      ['$0 profile export docker://registry.example/app:v1 -o app.profile.json', 'Save it to a file'],
    ]),
  handler: async (argv) => {
    const { profile } = await profileOf(argv);
    if (!argv.output) return void process.stdout.write(serializeProfile(profile));
    await writeFile(argv.output, serializeProfile(profile));
  },
};

const importCommand: CommandModule<object, ProfileArgs> = {
  command: 'import <file>',
  describe: 'Keep a profile file as the start-up profile of the image it names',
  builder: (y) =>
    withExamples(withCacheOptions(y.positional('file', { type: 'string', demandOption: true, describe: 'A profile (tocfs profile export, or docs/profiles.md)' })) as unknown as Argv<ProfileArgs>, [
      ['$0 profile import app.profile.json', 'Mounts of that image replay it from now on'],
    ]),
  handler: async (argv) => {
    const file = argv.file!;
    const profile = await readProfileFile(file);
    const path = await profileStore().save(profile);
    process.stdout.write(`imported the profile of ${profile.image.reference} (${profile.image.manifestDigest}): ${path}\n`);
  },
};

const rmCommand: CommandModule<object, ProfileArgs> = {
  command: 'rm <image>',
  describe: 'Remove the stored start-up profile of an image',
  builder: (y) => withExamples(withCacheOptions(withImageOptions(imageArg(y))) as unknown as Argv<ProfileArgs>, [['$0 profile rm docker://registry.example/app:v1', 'Forget what app:v1 read; its next use records anew']]),
  handler: async (argv) => {
    const digest = await manifestDigestOf(argv);
    if (!(await profileStore().remove(digest))) throw new TocfsError(`no start-up profile of ${argv.image} (${digest}) to remove`, 'ENOENT');
    process.stdout.write(`removed the start-up profile of ${argv.image} (${digest})\n`);
  },
};

/** Runs `cmd` with the mount in TOCFS_ROOTFS (or chrooted into it); resolves with its exit code. */
function runCommand(cmd: string[], rootfs: string, chroot: boolean): Promise<number> {
  const argv = chroot ? ['chroot', rootfs, ...cmd] : cmd;
  return new Promise((resolveExit, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit', env: { ...process.env, TOCFS_ROOTFS: rootfs } });
    child.once('error', (e) => reject(new TocfsError(`cannot run ${argv[0]}: ${e.message}`)));
    child.once('exit', (code, signal) => resolveExit(code ?? (signal ? 128 : 1)));
  });
}

const recordCommand: CommandModule<object, ProfileArgs> = {
  command: 'record <image> [cmd..]',
  describe: 'Mount an image afresh, run a command against it, and keep what it read as the image\'s start-up profile',
  builder: (y) =>
    withExamples(
      withCacheOptions(withImageOptions(imageArg(y)))
        .positional('cmd', { type: 'string', array: true, describe: 'The command (after --); it finds the mounted root filesystem in $TOCFS_ROOTFS' })
        .option('chroot', { type: 'boolean', default: false, describe: 'Run the command chrooted into the mount (root only)' }) as unknown as Argv<ProfileArgs>,
      [
        ['$0 profile record docker://registry.example/app:v1 --chroot -- /usr/bin/python3 -c "import app"', 'What app:v1 reads when it starts, without rebuilding it'],
        ['$0 profile record oci:./app -- sh -c \'cat "$TOCFS_ROOTFS/etc/os-release"\'', 'Any command that reads the mount'],
      ],
      'The mount uses an empty cache of its own, so every read the command makes is recorded; the profile is kept beside the cache (cache.dir) and replayed by later mounts and by tocfs store. The image is not changed: digests and signatures stay valid.',
    ),
  handler: async (argv) => {
    // yargs leaves what follows `--` in argv._ (after the command words), not in the positional.
    const afterDashes = (argv as unknown as { _: Array<string | number> })._.slice(2).map(String);
    const cmd = [...(argv.cmd ?? []), ...afterDashes];
    if (cmd.length === 0) throw new TocfsError('name the command to run after --, e.g. tocfs profile record IMAGE -- sh -c \'cat "$TOCFS_ROOTFS/etc/hostname"\'', 'EUSAGE');
    const [{ openImage }, { fsOperations }, { mountFs }, { ProfileRecorder, recordedImage }] = await Promise.all([
      import('../../image/image.js'),
      import('../../fs/operations.js'),
      import('../../fs/mount.js'),
      import('../../profile/recorder.js'),
    ]);
    const log = logger();
    const settings = currentConfig().values;
    const scratch = await mkdtemp(join(tmpdir(), 'tocfs-profile-record-'));
    const mountpoint = join(scratch, 'rootfs');
    await mkdir(mountpoint);
    const image = await openImage(argv.image, { ...openImageOptions(argv), cacheDir: join(scratch, 'cache'), logger: log });
    let saved: Promise<string | undefined> = Promise.resolve(undefined);
    // Everything the command reads until it exits: no idle or window end.
    const forever = 2 ** 31 - 1;
    const recorder = new ProfileRecorder(
      recordedImage(image.reference, image.resolved),
      { idleMs: forever, windowMs: forever },
      (profile) => (saved = profile ? profileStore().save(profile) : Promise.resolve(undefined)),
    );
    image.layers.forEach((l) => recorder.attach(l.index, l.reader));
    const mounted = await mountFs(mountpoint, fsOperations({ tree: image.tree(), read: (node, offset, length, into) => image.readFileInto(node, offset, length, into), logger: log }), { label: image.reference, logger: log, session: settings['daemon.fuse_session'] as FuseSessionKind, passthrough: settings['daemon.passthrough'] });
    let code: number;
    try {
      code = await runCommand(cmd, mountpoint, argv.chroot);
    } finally {
      recorder.stop();
      await mounted.unmount().catch((err: unknown) => log.warn({ err }, 'unmount failed'));
      await image.close().catch(() => undefined);
    }
    const path = await saved;
    await rm(scratch, { recursive: true, force: true });
    if (code !== 0) process.exitCode = code;
    if (!path) throw new TocfsError(`the command read nothing from ${argv.image}: no profile recorded (does it read $TOCFS_ROOTFS, or need --chroot?)`);
    const profile = await readProfileFile(path);
    process.stderr.write(`${describeProfile(profile, path)}\n`);
    if (code !== 0) process.stderr.write(`tocfs: the command exited with ${code}; the profile holds what it read until then\n`);
  },
};

export const profileCommand: CommandModule = {
  command: 'profile <command>',
  describe: 'Start-up profiles: what a container reads at start, fetched ahead next time',
  builder: (y) =>
    withExamples(
      y
        .command(recordCommand)
        .command(showCommand)
        .command(exportCommand)
        .command(importCommand)
        .command(rmCommand)
        .command(profilePushCommand)
        .demandCommand(1, 'Name a profile command: record, show, export, import, rm or push'),
      [
        ['$0 profile show docker://registry.example/app:v1', 'What app:v1 read at start'],
        ['$0 profile record docker://registry.example/app:v1 --chroot -- /app/start --check', 'Make the profile in CI'],
      ],
    ),
  handler: () => undefined,
};
