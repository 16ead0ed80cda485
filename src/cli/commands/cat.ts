/**
 * `tocfs cat IMAGE PATH`: one file's exact bytes to stdout, fetching only the footers, TOCs
 * and the frames that hold the file. `--stats` tells how little of the image that was.
 */
import type { Writable } from 'node:stream';
import type { Argv, CommandModule } from 'yargs';
import { TocfsError } from '../../errors.js';
import type { OpenedImage } from '../../image/image.js';
import type { FsNode } from '../../image/tree.js';
import { ReadCounter } from '../../source/counting.js';
import { withExamples } from '../help.js';
import { notFound, whereIn } from './ls.js';
import { openImageOptions, withCacheOptions, withImageOptions } from '../options.js';

interface CatArgs {
  image: string;
  path: string;
  layer?: string;
  stats: boolean;
  'tls-verify'?: boolean;
  platform?: string;
}

/** How much is read from a file per step (the reader plans and coalesces within it). */
const STEP = 4 * 1024 * 1024;

/** The regular file a path names (symlinks followed inside the image). */
export function fileAt(image: OpenedImage, path: string, layer?: string): FsNode {
  const found = image.tree(layer).resolve(path, true);
  if ('error' in found) throw notFound(image, path, found.error, layer);
  const where = whereIn(image, layer);
  const type = found.node.entry.type;
  if (type === 'dir') throw new TocfsError(`${path}: is a directory in ${where}`);
  if (type !== 'reg') throw new TocfsError(`${path}: not a regular file (${type}) in ${where}`);
  return found.node;
}

function write(out: Writable, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    out.write(data, (err) => (err ? reject(err) : resolve()));
  });
}

/** Writes the whole file to `out`, the next piece being fetched while the previous one is written. */
export async function copyFile(image: OpenedImage, node: FsNode, out: Writable): Promise<void> {
  const size = node.entry.size;
  let next = size > 0 ? image.readFile(node, 0, Math.min(STEP, size)) : undefined;
  for (let offset = 0; next; ) {
    const data = await next;
    if (data.length === 0) throw new TocfsError(`${node.entry.path}: short read at ${offset} of ${size}`);
    offset += data.length;
    next = offset < size ? image.readFile(node, offset, Math.min(STEP, size - offset)) : undefined;
    await write(out, data);
  }
}

export function formatStats(counter: ReadCounter, image: OpenedImage): string {
  const total = image.layers.reduce((n, l) => n + l.descriptor.size, 0);
  const pct = total > 0 ? (100 * counter.bytes) / total : 0;
  return `tocfs: read ${counter.bytes} bytes in ${counter.requests} requests from blobs: ${pct.toFixed(2)}% of the compressed image (${total} bytes)\n`;
}

export const catCommand: CommandModule<object, CatArgs> = {
  command: 'cat <image> <path>',
  describe: 'Write one file of an image to stdout, fetching only what it needs',
  builder: (y: Argv) =>
    withExamples(
      withCacheOptions(withImageOptions(y))
        .positional('image', { type: 'string', demandOption: true, describe: 'oci:DIR[:TAG] or [docker://]HOST/REPO[:TAG][@DIGEST]' })
        .positional('path', { type: 'string', demandOption: true, describe: 'File inside the image (symlinks are followed inside the image)' })
        .option('layer', { type: 'string', describe: 'Read from this layer\'s own tree (digest or unique prefix) instead of the merged view' })
        .option('stats', { type: 'boolean', default: false, describe: 'Print to stderr the bytes and requests read from blobs, and their share of the image' }) as unknown as Argv<CatArgs>,
      [
        ['$0 cat oci:./myimage /etc/os-release', 'Print a file of an image'],
        ['$0 cat --stats docker://quay.io/podman/hello /etc/passwd > passwd', 'Copy it out and say how much was fetched'],
      ],
    ),
  handler: async (argv) => {
    const { openImage } = await import('../../image/image.js');
    const counter = new ReadCounter();
    const image = await openImage(argv.image, { ...openImageOptions(argv), counter });
    try {
      await copyFile(image, fileAt(image, argv.path, argv.layer), process.stdout);
      if (argv.stats) process.stderr.write(formatStats(counter, image));
    } finally {
      await image.close();
    }
  },
};
