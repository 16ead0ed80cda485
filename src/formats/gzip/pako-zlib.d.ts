// pako's port of zlib's inflate, used for what node's zlib does not expose: stopping at deflate
// block boundaries (Z_BLOCK), reading the bit position there (data_type), and starting inside a
// byte (zlib's inflatePrime, which pako leaves out: checkpoints.ts fills the bit accumulator).
declare module 'pako/lib/zlib/zstream.js' {
  class ZStream {
    input: Uint8Array | null;
    next_in: number;
    avail_in: number;
    total_in: number;
    output: Uint8Array | null;
    next_out: number;
    avail_out: number;
    total_out: number;
    msg: string;
    data_type: number;
    /** inflate's internal state: the bit accumulator is what inflatePrime would fill. */
    state: { hold: number; bits: number } | null;
  }
  export = ZStream;
}

declare module 'pako/lib/zlib/inflate.js' {
  import ZStream = require('pako/lib/zlib/zstream.js');
  export function inflateInit2(strm: ZStream, windowBits: number): number;
  export function inflate(strm: ZStream, flush: number): number;
  export function inflateEnd(strm: ZStream): number;
  export function inflateSetDictionary(strm: ZStream, dictionary: Uint8Array): number;
}
