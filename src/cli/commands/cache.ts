/**
 * `tocfs cache stats|gc|verify|clear`: look after the chunk cache and stored TOCs on disk.
 * Safe while mounts run: they only see misses for what was removed, and fetch it again.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import type { CacheProgress, ChunkCache } from '../../cache/chunk-cache.js';
import { currentConfig, humanBytes, parseSize, settingOption } from '../../config/index.js';
import { TocfsError } from '../../errors.js';
import { createProgress } from '../../progress.js';
import { withExamples } from '../help.js';

interface CacheArgs {
  'cache-dir'?: string;
  profiles?: boolean;
  'max-size'?: string;
  json: boolean;
}

function cacheDir(): string {
  return resolve(currentConfig().values['cache.dir']);
}

function budget(argv: CacheArgs): number {
  if (argv['max-size'] === undefined) return currentConfig().values['cache.max_size'];
  const n = parseSize(argv['max-size']);
  if (n === undefined) throw new TocfsError(`--max-size: not a size: ${JSON.stringify(argv['max-size'])} (use e.g. 10G, 500M, 4096)`, 'EUSAGE');
  return n;
}

async function tocUsage(dir: string): Promise<{ files: number; bytes: number }> {
  const { DiskTocStore } = await import('../../cache/toc-store.js');
  return new DiskTocStore(dir).usage();
}

async function openExisting(dir: string): Promise<ChunkCache | undefined> {
  const st = await stat(dir).catch(() => undefined);
  if (!st) return undefined;
  if (!st.isDirectory()) throw new TocfsError(`cache directory ${dir} is not a directory`, 'EUSAGE');
  const { ChunkCache } = await import('../../cache/chunk-cache.js');
  return ChunkCache.open({ dir, memoryBytes: 1 });
}

/** A progress bar on a terminal, log lines (stderr) at every 10 % otherwise; nothing when there was nothing to do. */
function jobProgress(label: string): ((p: CacheProgress) => void) & { finish(): void } {
  let bar: ReturnType<typeof createProgress> | undefined;
  const update = (p: CacheProgress): void => {
    bar ??= createProgress({ label: `cache ${label}`, total: p.total });
    bar.update(p.done);
  };
  return Object.assign(update, { finish: () => bar?.done() });
}

function print(argv: CacheArgs, json: object, human: string): void {
  process.stdout.write(argv.json ? `${JSON.stringify(json, null, 2)}\n` : `${human}\n`);
}

const withCommon = <T>(y: Argv<T>) =>
  y.option('cache-dir', settingOption('cache.dir')).option('json', { type: 'boolean', default: false, describe: 'Print JSON for scripts' });

const statsCommand: CommandModule<object, CacheArgs> = {
  command: 'stats',
  describe: 'Show how many chunks and TOCs the cache holds and its budget',
  builder: (y) => withExamples(withCommon(y) as Argv<CacheArgs>, [['$0 cache stats', 'Size of the cache'], ['$0 cache stats --json | jq .chunks.bytes', 'Bytes on disk, for scripts']]),
  handler: async (argv) => {
    const dir = cacheDir();
    const maxBytes = currentConfig().values['cache.max_size'];
    const cache = await openExisting(dir);
    const s = cache ? await cache.stats() : { files: 0, bytes: 0 };
    const tocs = await tocUsage(dir);
    print(
      argv,
      { dir, exists: cache !== undefined, chunks: { files: s.files, bytes: s.bytes }, tocs, maxBytes },
      [
        `cache directory: ${dir}${cache ? '' : ' (does not exist yet)'}`,
        `chunks: ${s.files} files, ${humanBytes(s.bytes)} of a ${humanBytes(maxBytes)} budget (${maxBytes > 0 ? ((100 * s.bytes) / maxBytes).toFixed(1) : '0'}%)`,
        `TOCs:   ${tocs.files} files, ${humanBytes(tocs.bytes)}`,
      ].join('\n'),
    );
  },
};

const gcCommand: CommandModule<object, CacheArgs> = {
  command: 'gc',
  describe: 'Remove the least recently used chunks until the cache fits its budget',
  builder: (y) =>
    withExamples(
      withCommon(y).option('max-size', { type: 'string', describe: 'Budget to shrink to, e.g. 10G or 500M [default: cache.max_size]' }) as Argv<CacheArgs>,
      [['$0 cache gc', 'Shrink to the configured budget (cache.max_size)'], ['$0 cache gc --max-size 2G', 'Shrink to 2 GiB']],
    ),
  handler: async (argv) => {
    const dir = cacheDir();
    const budgetBytes = budget(argv);
    const cache = await openExisting(dir);
    const progress = jobProgress('gc');
    const res = cache ? await cache.gc(budgetBytes, progress) : { removedFiles: 0, removedBytes: 0 };
    progress.finish();
    const s = cache ? await cache.stats() : { files: 0, bytes: 0 };
    print(
      argv,
      { dir, budgetBytes, ...res, files: s.files, bytes: s.bytes },
      `removed ${res.removedFiles} chunks (${humanBytes(res.removedBytes)}); ${dir} now holds ${s.files} chunks, ${humanBytes(s.bytes)} (budget ${humanBytes(budgetBytes)})`,
    );
  },
};

const verifyCommand: CommandModule<object, CacheArgs> = {
  command: 'verify',
  describe: 'Re-hash every chunk; remove corrupt ones (exit status 1 if any)',
  builder: (y) => withExamples(withCommon(y) as Argv<CacheArgs>, [['$0 cache verify', 'Check every chunk on disk']]),
  handler: async (argv) => {
    const dir = cacheDir();
    const cache = await openExisting(dir);
    const progress = jobProgress('verify');
    const res = cache ? await cache.verify(progress) : { checked: 0, bad: [] };
    progress.finish();
    const human =
      res.bad.length === 0
        ? `checked ${res.checked} chunks in ${dir}: all match their digests`
        : [`checked ${res.checked} chunks in ${dir}: ${res.bad.length} did not match their digest and were removed:`, ...res.bad.map((d) => `  ${d}`)].join('\n');
    print(argv, { dir, ...res }, human);
    if (res.bad.length > 0) process.exitCode = 1;
  },
};

const clearCommand: CommandModule<object, CacheArgs> = {
  command: 'clear',
  describe: 'Remove every cached chunk and TOC (start-up profiles stay unless --profiles)',
  builder: (y) =>
    withExamples(withCommon(y).option('profiles', { type: 'boolean', default: false, describe: 'Remove the start-up profiles too' }) as Argv<CacheArgs>, [
      ['$0 cache clear', 'Empty the cache; keep start-up profiles, so the next cold start is still fast'],
      ['$0 cache clear --profiles', 'Empty it all'],
      ['$0 cache clear --cache-dir /tmp/tocfs-cache', 'Empty another cache directory'],
    ]),
  handler: async (argv) => {
    const dir = cacheDir();
    const cache = await openExisting(dir);
    const before = cache ? await cache.stats() : { files: 0, bytes: 0 };
    const tocs = await tocUsage(dir);
    await cache?.clear();
    let profiles = 0;
    if (argv.profiles) {
      const [{ ProfileStore }, { logger }] = await Promise.all([import('../../profile/store.js'), import('../../log.js')]);
      profiles = await new ProfileStore(dir, logger()).clear();
    }
    const human = `removed ${before.files} chunks (${humanBytes(before.bytes)}) and ${tocs.files} TOCs${argv.profiles ? ` and ${profiles} start-up profiles` : ''} from ${dir}`;
    print(argv, { dir, removedFiles: before.files, removedBytes: before.bytes, removedTocs: tocs.files, ...(argv.profiles ? { removedProfiles: profiles } : {}) }, human);
  },
};

export const cacheCommand: CommandModule = {
  command: 'cache <command>',
  describe: 'Show, shrink, check or empty the chunk cache',
  builder: (y) =>
    withExamples(y.command(statsCommand).command(gcCommand).command(verifyCommand).command(clearCommand).demandCommand(1, 'Name a cache command: stats, gc, verify or clear'), [
      ['$0 cache stats', 'How much the cache holds'],
      ['$0 cache gc --max-size 5G', 'Evict least recently used chunks down to 5 GiB'],
      ['$0 cache verify', 'Re-hash every chunk, remove corrupt ones'],
    ]),
  handler: () => undefined,
};
