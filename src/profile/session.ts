/**
 * Start-up profiles at an image's first use, for the mount and the store alike: find the
 * image's profile (its own, one sharing a layer, one of its repository; stored beside the
 * cache, or published in the registry), replay it on each layer as the layer is opened, and
 * record a profile when the image has none of its own yet.
 */
import type { Logger } from 'pino';
import { metrics } from '../metrics/index.js';
import { chunksForLayer, replayChunks, type ReplayBudget, type ReplayLayer, type ReplayResult, type ReplaySkips } from './replay.js';
import { ProfileRecorder, type RecordedImage, type RecordingWindow } from './recorder.js';
import type { FoundProfile, ImageKey, ProfileStore } from './store.js';
import type { Profile } from './profile.js';

export interface ProfileSettings extends RecordingWindow {
  /** Record a profile at an image's first use when it has none of its own. */
  record: boolean;
  /** Fetch a found profile's files ahead of reads. */
  replay: boolean;
  /** Compressed bytes one image's replay may fetch at most. */
  maxBytes: number;
  /** Range requests one image's replay may make at most. */
  maxRequests: number;
}

export const DEFAULT_PROFILE_SETTINGS: ProfileSettings = {
  record: true,
  replay: true,
  idleMs: 10_000,
  windowMs: 120_000,
  maxBytes: 512 * 1024 * 1024,
  maxRequests: 512,
};

/** Where else to look for a profile (the registry, by the referrers of the image's manifest). */
export type PublishedProfileFinder = (image: ImageKey & { reference: string }) => Promise<FoundProfile | undefined>;

export interface ProfileReplayStatus {
  source: string;
  match: FoundProfile['match'];
  layers: number;
  bytes: number;
  requests: number;
  skipped: ReplaySkips;
  done: boolean;
}

export interface ImageProfileStatus {
  recording: boolean;
  recordedReads: number;
  replay?: ProfileReplayStatus;
}

export class StartupProfiles {
  constructor(
    readonly store: ProfileStore,
    readonly settings: ProfileSettings,
    private readonly log: Logger,
    private readonly findPublished?: PublishedProfileFinder,
  ) {}

  /** The first use of an image: looks for its profile and starts recording when it has none of its own. */
  begin(image: RecordedImage): ImageProfiles {
    return new ImageProfiles(this, image, this.log.child({ image: image.reference }));
  }

  async find(image: RecordedImage): Promise<FoundProfile | undefined> {
    const key: ImageKey = { manifestDigest: image.manifestDigest, repository: image.repository, layerDigests: image.layers.map((d) => d.digest) };
    const local = await this.store.find(key).catch((err: unknown) => {
      this.log.warn({ err }, 'cannot read stored profiles');
      return undefined;
    });
    if (local?.match === 'manifest' || !this.findPublished) return local;
    const published = await this.findPublished({ ...key, reference: image.reference }).catch((err: unknown) => {
      this.log.warn({ err, image: image.reference }, 'cannot look for a published profile (going on without)');
      return undefined;
    });
    return published ?? local;
  }
}

/** One image's profile: the replay of the profile found for it, and the recording of its own. */
export class ImageProfiles {
  readonly found: Promise<FoundProfile | undefined>;
  private recorder: ProfileRecorder | undefined;
  private readonly budget: ReplayBudget;
  private readonly abort = new AbortController();
  private readonly opened: ReplayLayer[] = [];
  private replay: ProfileReplayStatus | undefined;
  private pending = 0;
  private saved: Promise<void> = Promise.resolve();

  constructor(
    private readonly profiles: StartupProfiles,
    private readonly image: RecordedImage,
    private readonly log: Logger,
  ) {
    const s = profiles.settings;
    this.budget = { bytes: s.maxBytes, requests: s.maxRequests };
    this.found = s.replay || s.record ? profiles.find(image) : Promise.resolve(undefined);
    if (s.record) this.startRecording();
  }

  /** A layer of the image is open: record its reads, and replay the profile's reads of it (once per layer). */
  layerOpened(layer: ReplayLayer): void {
    if (this.opened.some((l) => l.index === layer.index)) return;
    this.recorder?.attach(layer.index, layer.reader);
    this.opened.push(layer);
    if (!this.profiles.settings.replay) return;
    this.pending++;
    void this.found.then((found) => (found ? this.replayLayer(found, layer) : undefined)).finally(() => this.pending--);
  }

  /** Ends recording and stops starting replay requests; resolves once what was recorded is saved. */
  stop(): Promise<void> {
    this.abort.abort();
    this.recorder?.stop();
    return this.saved;
  }

  status(): ImageProfileStatus {
    return { recording: this.recorder?.recording ?? false, recordedReads: this.recorder?.readCount ?? 0, ...(this.replay ? { replay: { ...this.replay, done: this.replay.done && this.pending === 0 } } : {}) };
  }

  private startRecording(): void {
    const recorder = new ProfileRecorder(this.image, this.profiles.settings, (profile) => (this.saved = this.save(profile)));
    this.recorder = recorder;
    // An image that has a profile of its own keeps it: record only on a first use.
    void this.found.then((found) => {
      if (found?.match === 'manifest') {
        this.recorder = undefined;
        recorder.stop();
      }
    });
  }

  private async save(profile: Profile | undefined): Promise<void> {
    if (!profile) return;
    if ((await this.found)?.match === 'manifest') return;
    try {
      const path = await this.profiles.store.save(profile);
      this.log.info({ profile: path, reads: profile.reads.length, endedBy: profile.recording.endedBy, ms: profile.reads.at(-1)?.atMs }, 'recorded a start-up profile');
    } catch (err) {
      this.log.warn({ err }, 'cannot save the start-up profile');
    }
  }

  /** The regular files of each opened layer, built once, for matching by path. */
  private readonly filesByLayer = new Map<number, Set<string>>();

  private topmostHolder = (path: string): number | undefined => {
    let best: number | undefined;
    for (const l of this.opened) {
      let files = this.filesByLayer.get(l.index);
      if (!files) {
        files = new Set();
        for (const e of l.toc.entries) if (e.type === 'reg') files.add(e.path);
        this.filesByLayer.set(l.index, files);
      }
      if (files.has(path) && (best === undefined || l.index > best)) best = l.index;
    }
    return best;
  };

  private async replayLayer(found: FoundProfile, layer: ReplayLayer): Promise<void> {
    this.replay ??= { source: found.source, match: found.match, layers: 0, bytes: 0, requests: 0, skipped: { unknownPaths: 0, outsidePaths: 0, digestMismatches: 0, overBudget: 0 }, done: false };
    const skips: ReplaySkips = { unknownPaths: 0, outsidePaths: 0, digestMismatches: 0, overBudget: 0 };
    const started = Date.now();
    const wanted = chunksForLayer(found.profile, found.match, layer, this.topmostHolder, skips);
    if (wanted.length === 0) {
      this.replay.done = true;
      return this.warnSkips(found, layer, skips);
    }
    const result: ReplayResult = await replayChunks(layer.reader, wanted, this.budget, this.abort.signal, skips);
    const r = this.replay;
    r.layers++;
    r.bytes += result.bytes;
    r.requests += result.requests;
    for (const k of Object.keys(skips) as Array<keyof ReplaySkips>) r.skipped[k] += result[k];
    r.done = true;
    metrics.profileReplayed(result.bytes, result.requests);
    this.log.info({ layer: layer.descriptor.digest, profile: found.source, match: found.match, chunks: wanted.length, alreadyThere: result.alreadyThere, bytes: result.bytes, requests: result.requests, failedRequests: result.failedRequests, ms: Date.now() - started }, 'replayed the start-up profile');
    this.warnSkips(found, layer, result);
  }

  private warnSkips(found: FoundProfile, layer: ReplayLayer, s: ReplaySkips): void {
    if (s.unknownPaths + s.outsidePaths + s.digestMismatches + s.overBudget === 0) return;
    this.log.warn({ profile: found.source, layer: layer.descriptor.digest, unknownPaths: s.unknownPaths, outsidePaths: s.outsidePaths, digestMismatches: s.digestMismatches, overBudget: s.overBudget }, 'parts of the start-up profile do not fit the image: skipped (it only decides what is fetched ahead)');
  }
}
