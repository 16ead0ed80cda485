/**
 * parseTocDocument reads the entries array a batch at a time: it must accept exactly what one
 * JSON.parse of the whole document accepts, and give the same entries.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FormatError } from '../../src/errors.js';
import { parseTocDocument } from '../../src/formats/toc-json.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

/** What JSON.parse of the whole document (as its UTF-8 bytes read back) gives, or 'error'. */
function reference(text: string): { entries: unknown[]; tarSplitDigest?: string } | 'error' {
  let d: Record<string, unknown>;
  try {
    d = JSON.parse(Buffer.from(text).toString('utf8')) as Record<string, unknown>;
  } catch {
    return 'error';
  }
  if (typeof d !== 'object' || d === null || Array.isArray(d) || d.version !== 1 || !Array.isArray(d.entries)) return 'error';
  return { entries: d.entries, ...(d.tarSplitDigest ? { tarSplitDigest: d.tarSplitDigest as string } : {}) };
}

/** What parseTocDocument gives, entries read to the end, or 'error' (a FormatError). */
function batched(text: string): { entries: unknown[]; tarSplitDigest?: string } | 'error' {
  try {
    const doc = parseTocDocument(Buffer.from(text), 'sha256:layer');
    const entries = Array.from(doc.entries);
    assert.equal(entries.length, doc.entries.length, 'length is what iteration gives');
    return { entries, ...(doc.tarSplitDigest ? { tarSplitDigest: doc.tarSplitDigest } : {}) };
  } catch (e) {
    assert.ok(e instanceof FormatError, `a FormatError, not ${String(e)}`);
    assert.match((e as Error).message, /^layer sha256:layer: (TOC|unsupported TOC)/);
    return 'error';
  }
}

/** A deterministic pseudo-random source (tests must give the same documents each run). */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s / 2 ** 32;
  };
}

const AWKWARD = ['"', '\\', '[', ']', '{', '}', ',', ':', 'entries', '"entries"', 'é', '日本', '\u2028', '\n', '\t', '\u0000', '😀'];

function entry(i: number, rnd: () => number): Record<string, unknown> {
  const bits = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => AWKWARD[Math.floor(rnd() * AWKWARD.length)]!);
  const e: Record<string, unknown> = { type: 'reg', name: `./f${i}-${bits.join('')}`, mode: 420, size: i, digest: DIGEST, offset: i * 10, endOffset: i * 10 + 5 };
  if (i % 7 === 0) e.xattrs = { 'user.k': 'dg==', entries: [1, { entries: [] }] };
  if (i % 11 === 0) e.linkName = 'a,b]c}';
  return e;
}

function document(count: number, seed: number, space?: number): string {
  const rnd = prng(seed);
  return JSON.stringify({ version: 1, entries: Array.from({ length: count }, (_, i) => entry(i, rnd)), tarSplitDigest: DIGEST, after: { entries: 'not these' } }, null, space);
}

describe('formats: TOC JSON read a batch at a time', () => {
  it('gives the entries JSON.parse gives, across batch edges, indented or not', () => {
    for (const count of [0, 1, 511, 512, 513, 1024, 1500]) {
      for (const space of [undefined, 1]) {
        const text = document(count, count + 1, space);
        const got = batched(text);
        assert.notEqual(got, 'error', `${count} entries`);
        assert.deepEqual(got, reference(text), `${count} entries`);
      }
    }
  });

  it('the entries key anywhere in the document order, and documents the scan leaves to JSON.parse', () => {
    const e = JSON.stringify({ type: 'dir', name: './d/' });
    const cases = [
      `{"entries":[${e}],"version":1}`,
      ` \n{ "version" : 1 , "entries" : [ ${e} , ${e} ] } \n`,
      // a key written with an escape is the same key to JSON.parse: the later one wins
      `{"version":1,"entries":[${e}],"entri\\u0065s":[${e},${e}]}`,
      `{"version":1,"entri\\u0065s":[${e},${e}],"entries":[${e}]}`,
      // two plain "entries" keys: the last wins
      `{"version":1,"entries":[${e},${e}],"entries":[${e}]}`,
      `{"version":1,"entries":[]}`,
      `{"version":1,"entries":[ ]}`,
    ];
    for (const text of cases) {
      const want = reference(text);
      assert.notEqual(want, 'error', text);
      assert.deepEqual(batched(text), want, text);
    }
  });

  it('refuses what JSON.parse refuses, and documents without an entries array', () => {
    const e = JSON.stringify({ type: 'dir', name: './d/' });
    const many = Array.from({ length: 512 }, () => e).join(',');
    const cases = [
      `{"version":1,"entries":[,]}`,
      `{"version":1,"entries":[${e},]}`,
      `{"version":1,"entries":[${many},]}`, // the stray comma where a batch ends
      `{"version":1,"entries":[${many},,${e}]}`,
      `{"version":1,"entries":[${e} ${e}]}`,
      `{"version":1,"entries":[${e}]}{}`,
      `{"version":1,"entries":[${e}]`,
      `{"version":1,"entries":[${e}]]}`,
      `{"version":1,"entries":"[]"}`,
      `{"version":1,"entries":{}}`,
      `{"version":2,"entries":[${e}]}`,
      `[{"version":1,"entries":[${e}]}]`,
      `{"version":1,"entries":[{"name":"a\\"}]}`,
      `{"version":1,"entries":[{"name":"a\u0001"}]}`,
      `\ufeff{"version":1,"entries":[${e}]}`,
    ];
    for (const text of cases) {
      assert.equal(reference(text), 'error', `JSON.parse refuses ${text.slice(0, 80)}`);
      assert.equal(batched(text), 'error', text.slice(0, 80));
    }
  });

  it('agrees with JSON.parse on documents damaged at random', () => {
    const rnd = prng(7);
    const base = document(1100, 3);
    const noise = ['"', '\\', '[', ']', '{', '}', ',', ':', ' ', '1', 'x'];
    let refused = 0;
    for (let round = 0; round < 400; round++) {
      let text = base;
      for (let k = 0; k < 1 + Math.floor(rnd() * 3); k++) {
        const at = Math.floor(rnd() * text.length);
        const r = rnd();
        if (r < 0.4) text = text.slice(0, at) + text.slice(at + 1);
        else if (r < 0.8) text = text.slice(0, at) + noise[Math.floor(rnd() * noise.length)]! + text.slice(at);
        else text = text.slice(0, at) + noise[Math.floor(rnd() * noise.length)]! + text.slice(at + 1);
      }
      const want = reference(text);
      if (want === 'error') refused++;
      assert.deepEqual(batched(text), want, `round ${round}`);
    }
    assert.ok(refused > 100 && refused < 400, `both refused and accepted documents were tried (${refused} of 400 refused)`);
  });
});
