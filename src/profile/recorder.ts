/**
 * Recording a start-up profile: every read of the image's layers after its first use, in
 * order, with the time since first use. Reads of one file that continue where the last one
 * ended are kept as one range. Recording ends when reads go idle for `idleMs` after the first
 * read, when `windowMs` has passed since first use, or when stopped.
 */
import type { LayerReader } from '../fetch/layer-reader.js';
import type { TocEntry } from '../formats/toc.js';
import { parseReference, repositoryOf } from '../reference.js';
import type { Descriptor, ResolvedImage } from '../source/types.js';
import { tocDigestsOf } from '../layer/open.js';
import { MAX_PROFILE_READS, PROFILE_MEDIA_TYPE, PROFILE_SCHEMA_VERSION, type Profile, type ProfileRead } from './profile.js';

export interface RecordingWindow {
  /** Reads idle this long after the first one end the recording. */
  idleMs: number;
  /** The recording ends this long after first use at the latest. */
  windowMs: number;
}

export interface RecordedImage {
  reference: string;
  repository?: string | undefined;
  manifestDigest: string;
  /** Every layer of the image, bottom first. */
  layers: readonly Descriptor[];
}

/** What a profile says of the image `reference` resolved to: its manifest, layers and repository. */
export function recordedImage(reference: string, image: Pick<ResolvedImage, 'manifestDigest' | 'layers'>): RecordedImage {
  return { reference, repository: repositoryOf(parseReference(reference)), manifestDigest: image.manifestDigest, layers: image.layers };
}

export class ProfileRecorder {
  private readonly started = Date.now();
  private readonly reads: ProfileRead[] = [];
  /** The last read of each file (layer index + path), to extend when the next one continues it. */
  private readonly lastOf = new Map<string, ProfileRead>();
  private readonly detach: Array<() => void> = [];
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly windowTimer: NodeJS.Timeout;
  private ended = false;

  constructor(
    private readonly image: RecordedImage,
    private readonly window: RecordingWindow,
    /** Called once, when the recording ends; undefined when nothing was read. */
    private readonly done: (profile: Profile | undefined) => void,
  ) {
    this.windowTimer = setTimeout(() => this.end('window'), window.windowMs).unref();
  }

  get recording(): boolean {
    return !this.ended;
  }

  get readCount(): number {
    return this.reads.length;
  }

  /** Records the reads of the image's layer `index` from now on. */
  attach(index: number, reader: LayerReader): void {
    if (this.ended) return;
    this.detach.push(reader.observeReads((entry, offset, length) => this.note(index, entry, offset, length)));
  }

  private note(layer: number, entry: TocEntry, offset: number, length: number): void {
    if (this.ended) return;
    const key = `${layer}\n${entry.path}`;
    const last = this.lastOf.get(key);
    if (last && last.offset + last.length === offset) last.length += length;
    else if (!last || offset < last.offset || offset + length > last.offset + last.length) {
      if (this.reads.length >= MAX_PROFILE_READS) return this.end('window');
      const read: ProfileRead = { layer, path: entry.path, offset, length, atMs: Date.now() - this.started, ...(entry.digest ? { digest: entry.digest } : {}) };
      this.reads.push(read);
      this.lastOf.set(key, read);
    }
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.end('idle'), this.window.idleMs).unref();
  }

  /** Ends the recording now (the image is going away). */
  stop(): void {
    this.end('stop');
  }

  private end(endedBy: Profile['recording']['endedBy']): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.windowTimer);
    for (const d of this.detach) d();
    if (this.reads.length === 0) return this.done(undefined);
    this.done({
      schemaVersion: PROFILE_SCHEMA_VERSION,
      mediaType: PROFILE_MEDIA_TYPE,
      created: new Date().toISOString(),
      image: { reference: this.image.reference, ...(this.image.repository ? { repository: this.image.repository } : {}), manifestDigest: this.image.manifestDigest },
      recording: { idleMs: this.window.idleMs, windowMs: this.window.windowMs, endedBy },
      layers: this.image.layers.map((d) => {
        const toc = tocDigestsOf(d)[0];
        return { digest: d.digest, ...(toc ? { tocDigest: toc } : {}) };
      }),
      reads: this.reads,
    });
  }
}
