/** A ChunkStore in memory, for tests of the fetch path that need no disk cache. */
import type { ChunkStore } from '../../src/fetch/chunk-store.js';

export class MemoryChunkStore implements ChunkStore {
  readonly chunks = new Map<string, Buffer>();
  puts = 0;

  peek(digest: string): Buffer | undefined {
    return this.chunks.get(digest);
  }
  inMemory(digest: string): boolean {
    return this.chunks.has(digest);
  }
  async get(digest: string): Promise<Buffer | undefined> {
    return this.chunks.get(digest);
  }
  async has(digest: string): Promise<boolean> {
    return this.chunks.has(digest);
  }
  async put(digest: string, data: Buffer): Promise<void> {
    this.puts++;
    this.chunks.set(digest, data);
  }
  async writesBelow(): Promise<void> {}
}
