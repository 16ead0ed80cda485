/** What every measurement gets: options, the link, tocfs, the images, a work directory and a log. */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuiltImage, LayerFormat } from './images.js';
import type { Summary } from './stats.js';
import type { Link, LinkProfile } from './link.js';
import type { Tocfs } from './tocfs.js';
import { unmountUnder } from './proc.js';

export interface Options {
  quick: boolean;
  reps: number;
  profiles: LinkProfile[];
  /** Measurement groups to run (all by default). */
  only: Set<string>;
  /** Container-ready modes to run (all when undefined). */
  modes?: Set<string>;
  work: string;
  out: string;
  /** The peer stargz-store binary (prebuilt; the benchmark never builds it). */
  stargzStore?: string;
  /** Why the stargz-store modes cannot run, when they cannot. */
  stargzStoreMissing?: string;
}

export interface BenchImages {
  runtime: BuiltImage;
  runtimeStage: string;
  pairA: BuiltImage;
  pairB: BuiltImage;
  pairBStage: string;
  pairChangedFiles: number;
  /** The runtime image's v2 (1 file in 20 changed, like the pair), served as tag v2 of the runtime's repositories. */
  runtimeV2: BuiltImage;
  runtimeV2ChangedFiles: number;
  /** TOC-size images by entry count. */
  toc: Record<string, BuiltImage>;
  /** Distinct images mounted together. */
  many: BuiltImage[];
  /** Ten one-layer images of the same Python runtime, each with its own /etc/variant (group pss; built only when it runs). */
  pss?: BuiltImage[];
  /** Why `pss` is missing. */
  pssUnavailable?: string;
  /** The big file read for throughput, as a path inside the runtime image. */
  bigFile: string;
  /** Regular files (relative paths, symlinks resolved) the container command opens, from strace. */
  startupFiles: string[];
  /** A small file for time-to-first-byte. */
  smallFile: string;
}

export interface Ctx {
  opts: Options;
  link: Link;
  tocfs: Tocfs;
  images: BenchImages;
  log(msg: string): void;
  /** A fresh, empty directory under the work dir. */
  scratch(name: string): Promise<string>;
}

export function repoOf(img: BuiltImage, f: LayerFormat): string {
  return `bench/${img.name}-${f.replace(':', '-')}`;
}

export function refOf(host: string, img: BuiltImage, f: LayerFormat): string {
  return `${host}/${repoOf(img, f)}:latest`;
}

/** A measurement's figures (each a summary of its repetitions). */
export interface Measured {
  status: 'ok';
  figures: Record<string, Summary>;
  /** What was left out of this measurement, and why. */
  note?: string;
}

/** A measurement that did not produce numbers, and why. */
export interface NotMeasured {
  status: 'unavailable' | 'failed';
  reason: string;
}

export type Outcome = Measured | NotMeasured;

export function measured(figures: Record<string, Summary>, note?: string): Measured {
  return { status: 'ok', figures, ...(note ? { note } : {}) };
}

export function unavailable(reason: string): NotMeasured {
  return { status: 'unavailable', reason };
}

export function failed(e: unknown): NotMeasured {
  return { status: 'failed', reason: ((e as Error).message ?? String(e)).split('\n').slice(0, 4).join(' | ') };
}

export async function freshDir(root: string, name: string): Promise<string> {
  const d = join(root, name);
  await unmountUnder(d);
  await rm(d, { recursive: true, force: true });
  await mkdir(d, { recursive: true });
  return d;
}
