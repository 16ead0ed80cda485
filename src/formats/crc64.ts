/**
 * CRC-64/ISO as Go's hash/crc64 computes it (reflected poly 0xD800000000000000, init and
 * xorout all ones), slicing-by-8 on 32-bit halves (BigInt per byte is far too slow). tar-split
 * records it for every file's content.
 */

// TABLES_HI[k * 256 + i] / TABLES_LO[...]: table k of the slicing scheme.
// Int32Array and signed arithmetic keep every value a small integer for V8 (uint32 values
// above 2^31 become doubles, several times slower).
const TABLES_HI = new Int32Array(8 * 256);
const TABLES_LO = new Int32Array(8 * 256);
for (let i = 0; i < 256; i++) {
  let hi = 0;
  let lo = i;
  for (let k = 0; k < 8; k++) {
    const bit = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (bit) hi = (hi ^ 0xd8000000) >>> 0;
  }
  TABLES_HI[i] = hi;
  TABLES_LO[i] = lo;
}
for (let k = 1; k < 8; k++) {
  for (let i = 0; i < 256; i++) {
    const phi = TABLES_HI[(k - 1) * 256 + i]!;
    const plo = TABLES_LO[(k - 1) * 256 + i]!;
    const idx = plo & 0xff;
    TABLES_LO[k * 256 + i] = (((plo >>> 8) | (phi << 24)) ^ TABLES_LO[idx]!) >>> 0;
    TABLES_HI[k * 256 + i] = ((phi >>> 8) ^ TABLES_HI[idx]!) >>> 0;
  }
}

export class Crc64 {
  private hi = -1;
  private lo = -1;

  update(data: Uint8Array): this {
    const TH = TABLES_HI;
    const TL = TABLES_LO;
    let hi = this.hi;
    let lo = this.lo;
    let i = 0;
    const end8 = data.length - (data.length % 8);
    for (; i < end8; i += 8) {
      const a = lo ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
      const b = hi ^ (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24));
      const i7 = 7 * 256 + (a & 0xff), i6 = 6 * 256 + ((a >>> 8) & 0xff), i5 = 5 * 256 + ((a >>> 16) & 0xff), i4 = 4 * 256 + (a >>> 24);
      const i3 = 3 * 256 + (b & 0xff), i2 = 2 * 256 + ((b >>> 8) & 0xff), i1 = 256 + ((b >>> 16) & 0xff), i0 = b >>> 24;
      lo = TL[i7]! ^ TL[i6]! ^ TL[i5]! ^ TL[i4]! ^ TL[i3]! ^ TL[i2]! ^ TL[i1]! ^ TL[i0]!;
      hi = TH[i7]! ^ TH[i6]! ^ TH[i5]! ^ TH[i4]! ^ TH[i3]! ^ TH[i2]! ^ TH[i1]! ^ TH[i0]!;
    }
    for (; i < data.length; i++) {
      const idx = (lo ^ data[i]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ TL[idx]!;
      hi = (hi >>> 8) ^ TH[idx]!;
    }
    this.hi = hi;
    this.lo = lo;
    return this;
  }

  /** Big-endian, as Go's Sum(nil). */
  digest(): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32BE(~this.hi >>> 0, 0);
    b.writeUInt32BE(~this.lo >>> 0, 4);
    return b;
  }
}
