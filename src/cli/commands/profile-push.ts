/**
 * `tocfs profile push IMAGE [--file FILE]`: publishes a start-up profile to the image's
 * repository, as an OCI artifact referring to the image, so that every machine pulling the
 * image through tocfs replays it at first use (src/profile/publish.ts).
 */
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { currentConfig } from '../../config/index.js';
import { TocfsError } from '../../errors.js';
import { logger } from '../../log.js';
import { ProfileError, type Profile } from '../../profile/profile.js';
import { ProfileStore, readProfileFile } from '../../profile/store.js';
import type { ResolvedImage } from '../../source/types.js';
import { withExamples } from '../help.js';
import { sourceOptions, withCacheOptions, withImageOptions } from '../options.js';

interface ProfilePushArgs {
  image: string;
  file?: string;
  json: boolean;
  'cache-dir'?: string;
  'tls-verify'?: boolean;
  platform?: string;
}

async function resolveImage(argv: ProfilePushArgs): Promise<ResolvedImage> {
  const { openImageSource } = await import('../../image/open.js');
  const source = await openImageSource(argv.image, sourceOptions(argv));
  try {
    return await source.resolve();
  } finally {
    await source.close();
  }
}

/** A profile file, read no further than the size a profile may have. */
function readProfileToPush(path: string): Promise<Profile> {
  return readProfileFile(path).catch((e: NodeJS.ErrnoException) => {
    if (e instanceof ProfileError) throw e;
    throw new TocfsError(`cannot read the profile ${path}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`, 'ENOENT');
  });
}

/** The profile to push: --file, or the one stored for the image's manifest; it must be about that image. */
async function profileToPush(argv: ProfilePushArgs, image: ResolvedImage): Promise<{ profile: Profile; from: string }> {
  if (argv.file) {
    const profile = await readProfileToPush(argv.file);
    const digest = profile.image.manifestDigest;
    const ofImage = digest === image.manifestDigest || (image.indexManifests ?? []).some((m) => m.digest === digest);
    if (!ofImage)
      throw new TocfsError(
        `${argv.file} was recorded on ${digest} (${profile.image.reference}), which is not ${argv.image} (${image.manifestDigest}); push it with the image it was recorded on (e.g. ${argv.image.replace(/[:@][^/]*$/, '')}@${digest})`,
        'EUSAGE',
      );
    return { profile, from: argv.file };
  }
  const store = new ProfileStore(resolve(currentConfig().values['cache.dir']), logger());
  const profile = await store.load(image.manifestDigest);
  if (!profile)
    throw new TocfsError(
      `no start-up profile of ${argv.image} (${image.manifestDigest}) in ${store.dir}: run the image once through tocfs mount or tocfs store, make one with tocfs profile record, or name a file with --file`,
      'ENOENT',
    );
  return { profile, from: store.dir };
}

export const profilePushCommand: CommandModule<object, ProfilePushArgs> = {
  command: 'push <image>',
  describe: "Publish an image's start-up profile to its registry, for every machine that pulls the image",
  builder: (y) =>
    withExamples(
      withCacheOptions(withImageOptions(y.positional('image', { type: 'string', demandOption: true, describe: 'The image (a registry reference) whose profile to publish' })))
        .option('file', { type: 'string', requiresArg: true, describe: 'Publish this profile file (tocfs profile export) instead of the stored one' })
        .option('json', { type: 'boolean', default: false, describe: 'Print what was pushed as JSON' }) as unknown as Argv<ProfilePushArgs>,
      [
        ['$0 profile push registry.example/app:v1', 'Share the profile recorded when app:v1 was first used'],
        ['$0 profile push registry.example/app:v1 --file app.profile.json', 'Share a profile made elsewhere (tocfs profile record in CI)'],
      ],
      'The profile goes to the image\'s own registry (never a mirror), with the credentials pulls use (podman login), as an OCI artifact whose subject is the image manifest: found through the registry\'s referrers API, or on registries without one through the tag sha256-<manifest hex>. The image itself is not changed.',
    ),
  handler: async (argv) => {
    if (argv.image.startsWith('oci:')) throw new TocfsError(`${argv.image}: an OCI layout has no registry to publish a profile to; name the image by its registry reference`, 'EUSAGE');
    const image = await resolveImage(argv);
    const { profile } = await profileToPush(argv, image);
    const { pushProfile } = await import('../../profile/publish.js');
    const pushed = await pushProfile(argv.image, profile, sourceOptions(argv));
    if (argv.json) return void process.stdout.write(`${JSON.stringify(pushed, null, 2)}\n`);
    const how = pushed.findable.by === 'tag' ? `the referrers tag ${pushed.findable.tag} (${pushed.findable.referrers} referrers)` : "the registry's referrers API";
    process.stdout.write(`pushed the start-up profile of ${profile.image.manifestDigest} (${profile.reads.length} reads) to ${pushed.repository} as ${pushed.manifestDigest}, found through ${how}\n`);
  },
};
