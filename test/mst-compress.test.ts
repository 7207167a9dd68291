// MST plans that carry their weights (serialize({ weights: true }), format version 2): round trips,
// the documented byte layout, the compression it reaches, and rejection of every kind of corrupt bytes.
import { describe, expect, it } from 'vitest';
import { MstPlan, binaryConv2dSync, mstPlanSync, packBitsSync, packWeightsSync, tensor } from '../lib';
import type { BinaryWeights } from '../lib';
import { weightsHandle } from '../lib/handles';
import { native } from '../lib/native';
import { codeOf, expectCode, fixCrc, prototypeWeights, rng } from './helpers';

interface Layer {
  cout: number;
  cin: number;
  k: number;
  groups: number;
}

function makeWeights(l: Layer, seed: number, protos = 3, p = 0.03) {
  const wf = prototypeWeights(l.cout, (l.cin / l.groups) * l.k * l.k, protos, p, rng(seed));
  return { wf, w: packWeightsSync(tensor(wf, [l.cout, l.cin / l.groups, l.k, l.k]), { groups: l.groups }) };
}

/** A plan over `w` with exactly this parent array (checked natively like any other plan). */
function adopt(w: BinaryWeights, parent: number[]): MstPlan {
  return new MstPlan(w, native().mstPlan({ weights: weightsHandle(w), reuse: 'always', maxDepth: 8, parent: Int32Array.from(parent) }));
}

function varint(v: number): number[] {
  const out: number[] = [];
  for (; v >= 0x80; v = Math.floor(v / 0x80)) out.push((v % 0x80) | 0x80);
  out.push(v);
  return out;
}

/** A child's record: its channel, then either its raw row (form 0) or n differing bits (form n + 1) as gaps. */
interface Child {
  c: number;
  n: number;
  gaps: number[];
  raw?: number[];
}

const le32 = (words: number[]) => words.flatMap((v) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24]);

/** The bytes of a record, as documented. */
function encode(r: Child): number[] {
  return [...varint(r.c), ...(r.raw ? [0, ...le32(r.raw)] : [...varint(r.n + 1), ...r.gaps.flatMap(varint)])];
}

/** Channel c's delta form: the bits where its row differs from its parent's. */
function delta(plan: MstPlan, c: number): Child {
  const w = plan.weights, rw = w.rowWords;
  const gaps: number[] = [];
  let prev = -1;
  for (let k = 0; k < rw; k++)
    for (let b = 0; b < 32; b++)
      if (((w.words[c * rw + k] ^ w.words[plan.parent[c] * rw + k]) >>> b) & 1) {
        gaps.push(32 * k + b - prev);
        prev = 32 * k + b;
      }
  return { c, n: gaps.length, gaps, raw: undefined };
}

/** Channel c's raw form: its row's words. */
function raw(plan: MstPlan, c: number): Child {
  const rw = plan.weights.rowWords;
  return { c, n: 0, gaps: [], raw: Array.from(plan.weights.words.subarray(c * rw, (c + 1) * rw)) };
}

/** The documented child records of a plan: level order, each raw exactly when that is strictly shorter. */
function childRecords(plan: MstPlan): Child[] {
  return plan.levels.slice(1).flatMap((level) =>
    Array.from(level, (c) => {
      const d = delta(plan, c), r = raw(plan, c);
      return encode(r).length < encode(d).length ? r : d;
    }),
  );
}

/** Version-2 bytes assembled here: the real bytes up to the end of the roots' words, then `records` and a CRC. */
function assemble(plan: MstPlan, records: Child[], extra: number[] = []): Uint8Array {
  const cout = plan.parent.length, roots = plan.levels[0].length;
  const prefix = plan.serialize({ weights: true }).subarray(0, 44 + 4 * cout + 4 * roots * plan.weights.rowWords);
  return fixCrc(Uint8Array.from([...prefix, ...records.flatMap(encode), ...extra, 0, 0, 0, 0]));
}

function input(cin: number, seed: number) {
  const r = rng(seed);
  return packBitsSync(tensor(Float32Array.from({ length: 2 * 6 * 5 * cin }, () => r() - 0.5), [2, 6, 5, cin]), { layout: 'nhwc' });
}

describe('MstPlan with weights (version 2)', () => {
  const layers: Layer[] = [
    { cout: 1, cin: 5, k: 1, groups: 1 },
    { cout: 24, cin: 70, k: 3, groups: 1 },
    { cout: 12, cin: 66, k: 3, groups: 2 },
    { cout: 16, cin: 40, k: 1, groups: 4 },
    { cout: 20, cin: 64, k: 3, groups: 1 },
    { cout: 18, cin: 300, k: 1, groups: 1 },
  ];

  it('round-trips on awkward shapes: the same words, tree and bit-exact outputs, with or without w', () => {
    layers.forEach((l, i) => {
      const { w } = makeWeights(l, 10 + i);
      const x = input(l.cin, 20 + i);
      for (const reuse of ['never', 'always', 'auto'] as const) {
        const plan = mstPlanSync(w, { reuse, maxDepth: 3 });
        const bytes = plan.serialize({ weights: true });
        const back = MstPlan.deserialize(bytes);
        expect(back.weights).not.toBe(w);
        expect(back.weights.shape).toEqual(w.shape);
        expect(back.weights.groups).toBe(w.groups);
        expect(back.weights.words).toEqual(w.words);
        expect(back.parent).toEqual(plan.parent);
        expect([back.reuse, back.maxDepth, back.totalDistance]).toEqual([reuse, 3, plan.totalDistance]);
        expect(back.serialize({ weights: true })).toEqual(bytes);
        expect(plan.compressedSize()).toBe(bytes.length);
        const o = { padding: 1, output: 'int32' as const };
        expect(binaryConv2dSync(x, back, o).dataSync()).toEqual(binaryConv2dSync(x, plan, o).dataSync());
        expect(binaryConv2dSync(x, back.weights, o).dataSync()).toEqual(binaryConv2dSync(x, w, o).dataSync());
        const withW = MstPlan.deserialize(bytes, w);
        expect(withW.weights).toBe(w);
        expect(withW.parent).toEqual(plan.parent);
      }
    });
  });

  it('writes the documented layout: the real header and roots, then varint child records', () => {
    const { w } = makeWeights({ cout: 9, cin: 70, k: 3, groups: 1 }, 3);
    const plan = adopt(w, [-1, 0, 1, 2, 0, -1, 5, 6, 3]);
    const bytes = plan.serialize({ weights: true });
    const v = new DataView(bytes.buffer, bytes.byteOffset);
    expect(v.getUint32(4, true)).toBe(2);
    expect(Array.from({ length: 9 }, (_, c) => v.getInt32(44 + 4 * c, true))).toEqual(Array.from(plan.parent));
    expect(new Uint32Array(bytes.slice(44 + 36, 44 + 36 + 4 * w.rowWords).buffer)).toEqual(w.words.subarray(0, w.rowWords));
    expect(assemble(plan, childRecords(plan))).toEqual(bytes);
  });

  it('leaves version 1 as it was: serialize() and { weights: false } write the same tree-only bytes', () => {
    const { w } = makeWeights({ cout: 10, cin: 40, k: 3, groups: 1 }, 4);
    const plan = mstPlanSync(w, { reuse: 'always' });
    const v1 = plan.serialize();
    expect(v1.length).toBe(48 + 4 * 10);
    expect(new DataView(v1.buffer).getUint32(4, true)).toBe(1);
    expect(plan.serialize({ weights: false })).toEqual(v1);
    expect(MstPlan.deserialize(v1, w).parent).toEqual(plan.parent);
    expect(expectCode(() => MstPlan.deserialize(v1), 'ERR_XNORM_ARGUMENT').message).toMatch(/version-1 bytes carry no weights/);
    expectCode(() => plan.serialize({ weights: 1 as never }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => plan.serialize({ weight: true } as never), 'ERR_XNORM_ARGUMENT');
    expectCode(() => MstPlan.deserialize(plan.serialize({ weights: true }), {} as BinaryWeights), 'ERR_XNORM_ARGUMENT');
    expectCode(() => MstPlan.deserialize([1, 2, 3] as never), 'ERR_XNORM_CORRUPT_PLAN');
  });

  it('refuses version-2 bytes for other weights', () => {
    const l = { cout: 10, cin: 40, k: 3, groups: 1 };
    const { wf, w } = makeWeights(l, 5);
    const bytes = mstPlanSync(w, { reuse: 'always' }).serialize({ weights: true });
    wf[7] = -wf[7];
    const other = packWeightsSync(tensor(wf, w.shape));
    expect(expectCode(() => MstPlan.deserialize(bytes, other), 'ERR_XNORM_CORRUPT_PLAN').message).toMatch(/other weights/);
    const { w: narrower } = makeWeights({ ...l, cin: 39 }, 5);
    expect(expectCode(() => MstPlan.deserialize(bytes, narrower), 'ERR_XNORM_CORRUPT_PLAN').message).toMatch(/another shape/);
  });

  it('compresses prototype-style weights to well under 1 bit per weight', () => {
    const l = { cout: 256, cin: 128, k: 3, groups: 1 };
    const { w } = makeWeights(l, 6, 16, 0.01);
    const plan = mstPlanSync(w, { reuse: 'always', maxDepth: 64 });
    const bytes = plan.compressedSize();
    // The documented size: header and parents, the roots' words, then the child records.
    const children = childRecords(plan);
    const records = children.reduce((s, r) => s + encode(r).length, 0);
    expect(bytes).toBe(48 + 4 * l.cout + 4 * plan.levels[0].length * w.rowWords + records);
    // Both forms occur: siblings of one prototype as bit positions, the edges between prototypes raw.
    const rawCount = children.filter((r) => r.raw).length;
    expect(rawCount).toBeGreaterThan(0);
    expect(rawCount).toBeLessThan(children.length / 4);
    const k = (l.cin / l.groups) * l.k * l.k;
    const bitsPerWeight = (8 * bytes) / (l.cout * k);
    const ratio = (l.cout * w.rowWords * 4) / bytes;
    // Measured: 0.24 bits per weight, ratio 4.2 (siblings are ~2 % apart; the 15 edges between prototypes,
    // ~50 % apart, are raw rows and cost most of the rest: as bit positions they took 0.40 and 2.5).
    expect(bitsPerWeight).toBeLessThan(0.3);
    expect(ratio).toBeGreaterThan(3.5);
    const back = MstPlan.deserialize(plan.serialize({ weights: true }));
    expect(back.weights.words).toEqual(w.words);
    const x = input(l.cin, 8);
    const o = { padding: 1, output: 'int32' as const };
    expect(binaryConv2dSync(x, back, o).dataSync()).toEqual(binaryConv2dSync(x, w, o).dataSync());
  });

  it('never stores a child in more than its raw row, one byte and its channel: random weights', () => {
    for (const [i, l] of [
      { cout: 256, cin: 128, k: 3, groups: 1 },
      { cout: 40, cin: 70, k: 3, groups: 2 },
      { cout: 33, cin: 5, k: 1, groups: 1 },
    ].entries()) {
      const { w } = makeWeights(l, 30 + i, 4, 0.5);
      const plan = mstPlanSync(w, { reuse: 'always', maxDepth: 64 });
      expect(plan.levels.length).toBeGreaterThan(1);
      const bytes = plan.serialize({ weights: true });
      // A child's record is at most its channel's varint (2 bytes below Cout = 16384), the form byte 0
      // and its row: the packed words, the header and parents, and 3 bytes per channel bound every plan.
      const packed = l.cout * w.rowWords * 4;
      expect(bytes.length).toBeLessThanOrEqual(packed + 48 + 4 * l.cout + 3 * l.cout);
      const children = childRecords(plan);
      expect(assemble(plan, children)).toEqual(bytes);
      if (w.rowWords > 8) expect(children.every((r) => r.raw)).toBe(true);
      const back = MstPlan.deserialize(bytes);
      expect(back.weights.words).toEqual(w.words);
      expect(back.serialize({ weights: true })).toEqual(bytes);
      const x = input(l.cin, 40 + i);
      const o = { padding: 1, output: 'int32' as const };
      expect(binaryConv2dSync(x, back, o).dataSync()).toEqual(binaryConv2dSync(x, plan, o).dataSync());
      expect(binaryConv2dSync(x, back.weights, o).dataSync()).toEqual(binaryConv2dSync(x, w, o).dataSync());
    }
  });
});

describe('corrupt version-2 bytes', () => {
  // Cin/g = 40: the second word of each tap has 24 padding bits. Two groups, chains of depth 2. A raw
  // row takes 1 + 8 bytes, d differing bits (gaps below 128) 1 + d: channels 1 and 5 (3 and 8 bits from
  // their parents, 8 the tie, which stays delta) are stored as positions, 2 and 4 (9 and 20 bits) raw.
  const r = rng(7);
  const random = (): number[] => Array.from({ length: 40 }, () => (r() < 0.5 ? -1 : 1));
  const flip = (row: number[], at: number[]) => row.map((v, i) => (at.includes(i) ? -v : v));
  const rows = [random()];
  rows.push(flip(rows[0], [0, 17, 39]));
  rows.push(flip(rows[1], [1, 2, 3, 4, 5, 6, 7, 8, 9]));
  rows.push(random());
  rows.push(flip(rows[3], Array.from({ length: 20 }, (_, i) => 2 * i)));
  rows.push(flip(rows[4], [3, 8, 13, 18, 23, 28, 33, 38]));
  const w = packWeightsSync(tensor(Float32Array.from(rows.flat()), [6, 40, 1, 1]), { groups: 2 });
  const plan = adopt(w, [-1, 0, 1, -1, 3, 4]);
  const bytes = plan.serialize({ weights: true });
  const good = childRecords(plan);
  const rowBits = 32 * w.rowWords, k = 40;
  const rejected = (b: Uint8Array, withW = false) => expectCode(() => MstPlan.deserialize(b, withW ? w : undefined), 'ERR_XNORM_CORRUPT_PLAN').message;

  it('the crafted records are the real ones, so each case below changes one field', () => {
    expect(assemble(plan, good)).toEqual(bytes);
    expect(good.map((r) => r.c)).toEqual([1, 4, 2, 5]);
    expect(good.map((r) => (r.raw ? 'raw' : r.n))).toEqual([3, 'raw', 'raw', 8]);
  });

  it('every truncation and every single-bit flip, with or without w', () => {
    for (const withW of [false, true]) {
      for (let len = 0; len < bytes.length; len++) rejected(bytes.slice(0, len), withW);
      for (let bit = 0; bit < 8 * bytes.length; bit++) {
        const b = bytes.slice();
        b[bit >> 3] ^= 1 << (bit & 7);
        rejected(b, withW);
      }
    }
  });

  it('bad child records under a valid checksum', () => {
    const edit = (i: number, r: Partial<Child>) => good.map((g, j) => (j === i ? { ...g, ...r } : g));
    const [first] = good;
    const cases: [Child[], RegExp][] = [
      [edit(0, { c: 6 }), /child channel 6 out of range/],
      [edit(0, { c: 2 ** 40 }), /out of range/],
      [edit(0, { c: 3 }), /channel 3: a root/],
      [edit(1, { c: 1 }), /channel 1: stored twice/],
      [[good[2], good[1], good[0], good[3]], /channel 2: stored before its parent 1/],
      [edit(0, { n: k + 1 }), /more than K = 40/],
      [edit(0, { n: 2 ** 45 }), /more than K/],
      [edit(3, { n: good[3].n + 1 }), /truncated/],
      [edit(0, { n: first.n + 1, gaps: [...first.gaps, 0] }), /not increasing/],
      [edit(0, { gaps: [rowBits + 1, ...first.gaps.slice(1)] }), /beyond the row's 64 bits/],
      // A gap is the position + 1 for the first one: word 1, bit 8 is Cin index 40, padding.
      [edit(0, { n: 1, gaps: [41] }), /bit position 40 is padding/],
      [edit(0, { n: 2, gaps: [1, rowBits] }), /beyond the row/],
      // Raw rows: checked like a root's, and taken only when strictly shorter than the positions.
      [edit(1, { raw: [good[1].raw![0], good[1].raw![1] | (1 << 8)] }), /channel 4: raw row sets padding bits in word 1/],
      [edit(3, { raw: [0xffffffff], n: 0 }), /channel 5: truncated raw row/], // 4 of its 8 bytes
      [edit(3, { raw: [], n: 0 }), /channel 5: truncated raw row/],
      [edit(0, raw(plan, 1)), /channel 1: stored raw, though its bit positions take no more bytes/],
      [edit(3, raw(plan, 5)), /channel 5: stored raw, though/], // the tie: 9 bytes either way
      [edit(0, raw(plan, 0)), /channel 0: a root/],
      [edit(0, { raw: raw(plan, 0).raw }), /channel 1: stored raw, though/], // the parent's own row, 0 bits
      [edit(1, delta(plan, 4)), /channel 4: stored as bit positions, though its raw row takes fewer bytes/],
      [edit(2, delta(plan, 2)), /channel 2: stored as bit positions, though/], // 10 bytes against 9
    ];
    for (const [records, message] of cases) {
      expect(rejected(assemble(plan, records))).toMatch(message);
      expect(rejected(assemble(plan, records), true)).toMatch(message);
    }
    expect(rejected(assemble(plan, good, [0]))).toMatch(/1 trailing bytes/);
    expect(rejected(assemble(plan, good.slice(0, 3)))).toMatch(/truncated in a child channel/);
    // The positions of another (valid) child: well-formed, but not the weights the hash was taken of.
    expect(rejected(assemble(plan, edit(0, { n: 1, gaps: [1] })))).toMatch(/decoded weights fail the weights hash/);
  });

  it('varints that are overlong or overflow 64 bits', () => {
    const cout = plan.parent.length, roots = plan.levels[0].length;
    const at = 44 + 4 * cout + 4 * roots * w.rowWords;
    const withBody = (body: number[]) => fixCrc(Uint8Array.from([...bytes.subarray(0, at), ...body, 0, 0, 0, 0]));
    expect(rejected(withBody([0x81, 0x00]))).toMatch(/shortest form/);
    expect(rejected(withBody([...new Array(9).fill(0xff), 0x02]))).toMatch(/overflows 64 bits/);
    expect(rejected(withBody([...new Array(12).fill(0x80)]))).toMatch(/overflows|truncated/);
  });

  it('bad header fields and root words under a valid checksum, refused before anything is allocated', () => {
    const set = (at: number, v: number) => {
      const b = bytes.slice();
      new DataView(b.buffer).setUint32(at, v, true);
      return fixCrc(b);
    };
    expect(rejected(set(16, 0xffffffff))).toMatch(/truncated/); // Cout
    expect(rejected(set(20, 0x7fffffff))).toMatch(/stored shape/); // Cin/g beyond 2^30
    expect(rejected(set(24, 0))).toMatch(/stored shape/); // kh
    expect(rejected(set(28, 1 << 20))).toMatch(/weights: truncated: 2 roots/); // kw: rows the bytes cannot hold
    expect(rejected(set(32, 4))).toMatch(/stored shape/); // groups not dividing Cout
    expect(rejected(set(40, new DataView(bytes.buffer).getUint32(40, true) ^ 1))).toMatch(/weights hash/);
    // A padding bit set in the first root's second word (Cin/g = 40: bits 8..31 are padding).
    const rootWord = 44 + 4 * plan.parent.length + 4;
    expect(rejected(set(rootWord, new DataView(bytes.buffer).getUint32(rootWord, true) | (1 << 8)))).toMatch(/padding bits/);
    expect(codeOf(() => MstPlan.deserialize(set(4, 3)))).toBe('ERR_XNORM_CORRUPT_PLAN');
  });
});
