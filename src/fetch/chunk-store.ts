/**
 * What the fetch path needs of a store of verified chunk contents, keyed by chunk digest.
 * The disk cache (cache/chunk-cache.ts) is the one tocfs runs with; tests schedule fetches
 * over a store in memory.
 */
export interface ChunkStore {
  /** Contents held in memory, without I/O (undefined when not there). */
  peek(digest: string): Buffer | undefined;
  inMemory(digest: string): boolean;
  /** Contents from any tier, or undefined when not stored (a damaged copy is a miss). */
  get(digest: string): Promise<Buffer | undefined>;
  has(digest: string): Promise<boolean>;
  /** Keeps verified contents; resolves once stored (never rejects for a full disk). */
  put(digest: string, data: Buffer): Promise<void>;
  /**
   * One file with a regular file's whole content, named by its digest, once all its chunks are
   * stored (passthrough reads go to it); undefined while a chunk is missing. Optional: a store
   * in memory has no files.
   */
  wholeFile?(digest: string, chunks: ReadonlyArray<{ digest: string; size: number; zeros: boolean }>): Promise<string | undefined>;
  /** Resolves once writes waiting for the disk are below `bytes` (background work does not outrun the disk). */
  writesBelow(bytes: number): Promise<void>;
}
