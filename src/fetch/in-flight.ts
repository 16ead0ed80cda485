/**
 * Chunk fetches under way, by chunk digest: a read that needs a chunk someone is already
 * fetching waits for that fetch instead of asking the registry again. One table per chunk
 * store, shared by every LayerReader over it, so identical content in two layers or two
 * images is fetched once.
 */
import type { ChunkStore } from './chunk-store.js';

/** A fetch under way that others may join. */
export interface Flight {
  promise: Promise<Buffer>;
  /** A user read joined it: a background fetch must not wait for user reads any more (they wait for it). */
  promote(): void;
}

/** A digest claimed for fetching: whoever claimed it settles it, and the claim ends then. */
export interface Claim {
  promise: Promise<Buffer>;
  resolve(data: Buffer): void;
  reject(error: unknown): void;
}

export class InFlightChunks {
  private readonly flights = new Map<string, Flight>();

  get size(): number {
    return this.flights.size;
  }

  has(digest: string): boolean {
    return this.flights.has(digest);
  }

  /** The fetch under way for `digest`, to wait for. */
  join(digest: string): Flight | undefined {
    return this.flights.get(digest);
  }

  /** Claims `digest`: later reads join this claim until it settles. `onPromote` runs when a user read joins. */
  claim(digest: string, onPromote: () => void): Claim {
    let resolve!: (data: Buffer) => void;
    let reject!: (error: unknown) => void;
    const promise = new Promise<Buffer>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const flight: Flight = { promise, promote: onPromote };
    const end = (): void => {
      if (this.flights.get(digest) === flight) this.flights.delete(digest);
    };
    promise.then(end, end);
    this.flights.set(digest, flight);
    return { promise, resolve, reject };
  }
}

const tables = new WeakMap<ChunkStore, InFlightChunks>();

/** The in-flight table of a chunk store: the same one for every reader over that store. */
export function inFlightFor(store: ChunkStore): InFlightChunks {
  let table = tables.get(store);
  if (!table) tables.set(store, (table = new InFlightChunks()));
  return table;
}
