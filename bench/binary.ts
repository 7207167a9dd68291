// npm run bench -- binary: binaryConv2d on ResNet-18 layer shapes (batch 8) against onnxruntime-node's
// float Conv of the same shape and against this machine's XOR+popcount peak; packBits against memory
// read bandwidth; MST channel reuse on weights made of a few prototypes with flipped bits.
import {
  binaryConv2dSync,
  binaryLinearSync,
  conv2dSync,
  info,
  mstPlanSync,
  packBitsSync,
  packWeightsSync,
  popcountPeak,
  setNumThreads,
  tensor,
  type BinaryWeights,
  type MstPlan,
} from '../lib';
import { native } from '../lib/native';
import { fmt, table } from './common';

const BATCH = 8;

/**
 * Best wall time (ms) of each function over `rounds` interleaved rounds. The best, not the median: on a
 * shared machine other processes only ever add time, and interleaving gives the contenders the same
 * conditions (xnorm kernels only: onnxruntime's spinning threads would distort what runs next).
 */
async function bestMs(fns: (() => unknown)[], rounds: number): Promise<number[]> {
  const best = fns.map(() => Infinity);
  for (const f of fns) await f(); // warm-up
  for (let r = 0; r < rounds; r++)
    for (let i = 0; i < fns.length; i++) {
      const t0 = process.hrtime.bigint();
      await fns[i]();
      best[i] = Math.min(best[i], Number(process.hrtime.bigint() - t0) / 1e6);
    }
  return best;
}

function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a * 1664525 + 1013904223) >>> 0;
    return a / 4294967296;
  };
}

// ---- a minimal ONNX (protobuf) writer: just the messages a one-node Conv / MatMul model needs -----

class Pb {
  private bytes: number[] = [];
  varint(v: number): this {
    while (v >= 0x80) {
      this.bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.bytes.push(v);
    return this;
  }
  int(field: number, v: number): this {
    return this.varint(field * 8).varint(v);
  }
  raw(field: number, b: Uint8Array | number[]): this {
    this.varint(field * 8 + 2).varint(b.length);
    for (const x of b) this.bytes.push(x);
    return this;
  }
  str(field: number, s: string): this {
    return this.raw(field, Array.from(Buffer.from(s, 'utf8')));
  }
  msg(field: number, m: Pb): this {
    return this.raw(field, m.done());
  }
  done(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

function valueInfo(name: string, dims: number[]): Pb {
  const shape = new Pb();
  for (const d of dims) shape.msg(1, new Pb().int(1, d)); // TensorShapeProto.dim { dim_value }
  const tensorType = new Pb().int(1, 1).msg(2, shape); // elem_type FLOAT, shape
  return new Pb().str(1, name).msg(2, new Pb().msg(1, tensorType)); // ValueInfoProto { name, type { tensor_type } }
}

function onnxModel(op: 'Conv' | 'MatMul', xDims: number[], w: Float32Array, wDims: number[], yDims: number[], pads: number[], strides: number[]): Uint8Array {
  const init = new Pb();
  for (const d of wDims) init.int(1, d); // TensorProto.dims
  init.int(2, 1).str(8, 'W').raw(9, new Uint8Array(w.buffer, w.byteOffset, w.byteLength)); // FLOAT, name, raw_data
  const node = new Pb().str(1, 'X').str(1, 'W').str(2, 'Y').str(3, 'n0').str(4, op);
  if (op === 'Conv') {
    const ints = (name: string, v: number[]) => {
      const a = new Pb().str(1, name);
      for (const x of v) a.int(8, x);
      return a.int(20, 7); // type INTS
    };
    node.msg(5, ints('pads', pads)).msg(5, ints('strides', strides));
  }
  const graph = new Pb().msg(1, node).str(2, 'g').msg(5, init).msg(11, valueInfo('X', xDims)).msg(12, valueInfo('Y', yDims));
  return new Pb().int(1, 7).msg(7, graph).msg(8, new Pb().str(1, '').int(2, 13)).done(); // ir_version 7, opset 13
}

// ---------------------------------------------------------------------------------------------------

interface Layer {
  name: string;
  cin: number;
  cout: number;
  hw: number;
  k: number;
  stride: number;
}

const layers: Layer[] = [
  { name: 'conv2_x 3x3', cin: 64, cout: 64, hw: 56, k: 3, stride: 1 },
  { name: 'conv3_x 3x3', cin: 128, cout: 128, hw: 28, k: 3, stride: 1 },
  { name: 'conv4_x 3x3', cin: 256, cout: 256, hw: 14, k: 3, stride: 1 },
  { name: 'conv5_x 3x3', cin: 512, cout: 512, hw: 7, k: 3, stride: 1 },
  { name: 'downsample 1x1', cin: 256, cout: 512, hw: 14, k: 1, stride: 2 },
];

async function ortSession(model: Uint8Array) {
  try {
    const ort = await import('onnxruntime-node');
    const s = await ort.InferenceSession.create(model, { intraOpNumThreads: info().cpu.threads, interOpNumThreads: 1 });
    return { ort, s };
  } catch (e) {
    console.log(`onnxruntime-node unavailable: ${(e as Error).message}`);
    return null;
  }
}

export async function run(): Promise<void> {
  const r = rng(1);
  const threads = info().cpu.threads;
  // The ceiling: the XOR+popcount loop's rate on one thread times the thread count (cores are alike),
  // or the all-thread rate if higher. On a shared machine the all-thread rate is rarely clean, so it
  // is sampled between the layers and the best kept.
  setNumThreads(1);
  const single = Math.max(popcountPeak(0.1), popcountPeak(0.1));
  setNumThreads(threads);
  let peak = Math.max(single * threads, popcountPeak(0.1));
  // The memory ceiling for the roofline column: a streaming read of 64 MiB (twice the L3 of the dev machine).
  const ceilingWords = new Uint32Array(16 << 20).fill(1);
  const [ceilingMs] = await bestMs([() => native().readSum(ceilingWords as never)], 5);
  const memGBs = ceilingWords.byteLength / ceilingMs / 1e6;
  // Best attainable share of the popcount peak when `bytes` (input, weights, float output) must cross
  // memory once: compute time / max(compute time, memory time).
  const roofline = (bitOps: number, bytes: number) => {
    const computeS = bitOps / peak, memS = bytes / (memGBs * 1e9);
    return `${fmt((100 * computeS) / Math.max(computeS, memS))}%`;
  };

  const rows: (string | number)[][] = [];
  for (const L of layers) {
    const pad = L.k === 3 ? 1 : 0;
    const oh = Math.floor((L.hw + 2 * pad - L.k) / L.stride) + 1;
    const xf = Float32Array.from({ length: BATCH * L.cin * L.hw * L.hw }, () => r() - 0.5);
    const wf = Float32Array.from({ length: L.cout * L.cin * L.k * L.k }, () => r() - 0.5);
    const x = packBitsSync(tensor(xf, [BATCH, L.cin, L.hw, L.hw]));
    const w = packWeightsSync(tensor(wf, [L.cout, L.cin, L.k, L.k]));
    const opts = { padding: pad, stride: L.stride };
    const bitOps = BATCH * oh * oh * L.cout * L.cin * L.k * L.k;
    // xnorm first, with no onnxruntime session alive: its intra-op threads keep spinning after a run and
    // would take the cores from xnorm's pool.
    const [ms, bitsMs] = await bestMs([() => binaryConv2dSync(x, w, opts).dispose(), () => binaryConv2dSync(x, w, { ...opts, output: 'bits' }).dispose()], 7);
    const xt = tensor(xf, [BATCH, L.cin, L.hw, L.hw]), wt = tensor(wf, [L.cout, L.cin, L.k, L.k]);
    const [floatMs] = await bestMs([() => conv2dSync(xt, wt, undefined, opts).dispose()], 5);
    peak = Math.max(peak, popcountPeak(0.1));
    const o = await ortSession(onnxModel('Conv', [BATCH, L.cin, L.hw, L.hw], wf, [L.cout, L.cin, L.k, L.k], [BATCH, L.cout, oh, oh], [pad, pad, pad, pad], [L.stride, L.stride]));
    const [ortMs] = o ? await bestMs([() => o.s.run({ X: new o.ort.Tensor('float32', xf, [BATCH, L.cin, L.hw, L.hw]) })], 7) : [NaN];
    if (o) await o.s.release();
    const rate = bitOps / (ms / 1e3);
    const bytes = x.dataSync().byteLength + w.words.byteLength + BATCH * oh * oh * L.cout * 4;
    rows.push([`${L.name} ${L.cin}->${L.cout} @${L.hw}`, fmt(ms) + ' ms', fmt(bitsMs) + ' ms', fmt(ortMs) + ' ms', `${fmt(ortMs / ms)}x`, `${fmt(floatMs / ms)}x`, fmt(rate / 1e9), rate, roofline(bitOps, bytes), bitOps / (bitsMs / 1e3)]);
  }
  {
    const K = 4096, COUT = 4096;
    const xf = Float32Array.from({ length: BATCH * K }, () => r() - 0.5);
    const wf = Float32Array.from({ length: COUT * K }, () => r() - 0.5);
    const x = packBitsSync(tensor(xf, [BATCH, K]));
    const w = packWeightsSync(tensor(wf, [COUT, K]));
    const wt = new Float32Array(K * COUT); // MatMul takes W as [K, Cout]
    for (let o = 0; o < COUT; o++) for (let k = 0; k < K; k++) wt[k * COUT + o] = wf[o * K + k];
    const [ms, bitsMs] = await bestMs([() => binaryLinearSync(x, w).dispose(), () => binaryLinearSync(x, w, { output: 'bits' }).dispose()], 15);
    const xt = tensor(xf, [BATCH, K, 1, 1]), w4 = tensor(wf, [COUT, K, 1, 1]);
    const [floatMs] = await bestMs([() => conv2dSync(xt, w4).dispose()], 5);
    const o = await ortSession(onnxModel('MatMul', [BATCH, K], wt, [K, COUT], [BATCH, COUT], [], []));
    const [ortMs] = o ? await bestMs([() => o.s.run({ X: new o.ort.Tensor('float32', xf, [BATCH, K]) })], 15) : [NaN];
    if (o) await o.s.release();
    const rate = (BATCH * K * COUT) / (ms / 1e3);
    const bytes = x.dataSync().byteLength + w.words.byteLength + BATCH * COUT * 4;
    rows.push([`binaryLinear ${K}->${COUT}`, fmt(ms) + ' ms', fmt(bitsMs) + ' ms', fmt(ortMs) + ' ms', `${fmt(ortMs / ms)}x`, `${fmt(floatMs / ms)}x`, fmt(rate / 1e9), rate, roofline(BATCH * K * COUT, bytes), (BATCH * K * COUT) / (bitsMs / 1e3)]);
  }
  for (const r of rows) {
    r[7] = `${fmt((100 * (r[7] as number)) / peak)}%`;
    r[9] = `${fmt((100 * (r[9] as number)) / peak)}%`;
  }
  console.log(
    `XOR+popcount peak (register-resident loop): ${fmt(single / 1e9)} Gbit-ops/s on one thread, ` +
      `${fmt(peak / 1e9)} Gbit-ops/s for ${threads} threads\n`,
  );
  console.log(
    `binaryConv2d, batch ${BATCH}, float output (and 'bits' output: the next binary layer's input) vs ` +
      `onnxruntime-node float32 Conv/MatMul and xnorm's float conv2d (${threads} threads)\n`,
  );
  console.log(`memory read ceiling (64 MiB streaming sum): ${fmt(memGBs)} GB/s\n`);
  console.log(table(['layer', 'xnorm float', 'xnorm bits', 'ort float', 'vs ort', 'vs xnorm conv2d', 'Gbit-ops/s', 'of peak', 'roofline', 'bits: of peak'], rows));

  // ---- packBits bandwidth ----
  const big = Float32Array.from({ length: BATCH * 64 * 112 * 112 }, (_, i) => ((i * 2654435761) % 1000) - 500);
  const tn = tensor(big, [BATCH, 64, 112, 112]), th = tensor(big, [BATCH, 112, 112, 64]);
  const [readMs, nchwMs, nhwcMs] = await bestMs(
    [() => native().readSum(new Uint32Array(big.buffer) as never), () => packBitsSync(tn, { layout: 'nchw' }).dispose(), () => packBitsSync(th, { layout: 'nhwc' }).dispose()],
    9,
  );
  const readGBs = big.byteLength / readMs / 1e6;
  const packRows = ([['nchw', nchwMs], ['nhwc', nhwcMs]] as const).map(([layout, ms]) => {
    const gbs = big.byteLength / ms / 1e6;
    return [`${layout} [${BATCH}, 64, 112, 112]`, fmt(ms) + ' ms', fmt(gbs), `${fmt((100 * gbs) / readGBs)}%`];
  });
  console.log(`\npackBits (float32 read), memory read bandwidth ${fmt(readGBs)} GB/s\n`);
  console.log(table(['input', 'time', 'GB/s', 'of read bandwidth'], packRows));

  // ---- MST channel reuse ----
  const cal = native().mstCalibration({}) as { densePerWord: number; reusePerBit: number; reusePerEdge: number; transposePerWord: number };
  console.log(
    `\nMST on conv4_x 3x3 256->256 @14, 'bits' output; 16 prototype channels, each bit flipped with probability p.` +
      `\n'auto' cost model, calibrated at first use (per pixel): dense ${fmt(cal.densePerWord * 1e12)} ps per channel-word, ` +
      `reuse ${fmt(cal.reusePerEdge * 1e12)} ps per edge + ${fmt(cal.reusePerBit * 1e12)} ps per differing bit, ` +
      `${fmt(cal.transposePerWord * 1e12)} ps per word of tile bit rows (an upper bound).` +
      `\nTimes: median (p90) of ${MST_CALLS} calls per contender, in blocks of 5 consecutive calls after one untimed ` +
      `call (a plan's own data warm, as in a server), blocks interleaved. bound = 1 / (1 - ops cut).\n`,
  );
  const L = { cin: 256, cout: 256, hw: 14 };
  const per = L.cin * 9;
  const xs = [BATCH, 1].map((b) => packBitsSync(tensor(Float32Array.from({ length: b * L.cin * L.hw * L.hw }, () => r() - 0.5), [b, L.cin, L.hw, L.hw])));
  const mstRows: (string | number)[][] = [];
  const sizeRows: (string | number)[][] = [];
  for (const p of [0.005, 0.02, 0.05, 0.1, 0.25, -1]) {
    const proto = Float32Array.from({ length: 16 * per }, () => r() - 0.5);
    const wf = Float32Array.from({ length: L.cout * per }, (_, i) =>
      p < 0 ? r() - 0.5 : (r() < p ? -1 : 1) * proto[(Math.floor(i / per) % 16) * per + (i % per)],
    );
    const w: BinaryWeights = packWeightsSync(tensor(wf, [L.cout, L.cin, 3, 3]));
    const always = mstPlanSync(w, { reuse: 'always', maxDepth: 8 }), auto = mstPlanSync(w, { reuse: 'auto', maxDepth: 8 });
    const label = p < 0 ? 'random' : `${p * 100}%`;
    for (const x of xs) {
      const [dense, a, b] = mstTimes([w, always, auto].map((ww) => () => binaryConv2dSync(x, ww, { padding: 1, output: 'bits' }).dispose()));
      mstRows.push([
        label, String(x.shape[0]), `${fmt(dense.median)} (${fmt(dense.p90)}) ms`,
        `${fmt(100 * always.opsReduction)}%`, `${fmt(1 / (1 - always.opsReduction))}x`, `${fmt(dense.median / a.median)}x`,
        String(auto.depth), `${fmt(dense.median / b.median)}x`,
      ]);
    }
    const dense = L.cout * w.rowWords * 4, bytes = always.compressedSize();
    sizeRows.push([label, `${dense} B`, `${bytes} B`, fmt((8 * bytes) / (L.cout * per)), `${fmt(dense / bytes)}x`]);
  }
  console.log(table(['p', 'batch', 'dense', 'always: ops cut', 'bound', 'dense/MST', 'auto: depth', 'dense/MST'], mstRows));
  console.log(`\nCompressed weights of the 'always' plans (plan.serialize({ weights: true })) against the packed signs\n`);
  console.log(table(['p', 'packed', 'compressed', 'bits/weight', 'ratio'], sizeRows));
}

const MST_CALLS = 100;

/**
 * Median and p90 (ms) of MST_CALLS calls of each function, in interleaved blocks of 5 consecutive calls,
 * each block after one untimed call (the previous contender's data has left the caches), the order of
 * the contenders shuffled per round so none always follows the same one.
 */
function mstTimes(fns: (() => unknown)[]): { median: number; p90: number }[] {
  const times = fns.map(() => [] as number[]);
  const order = rng(99);
  for (let block = 0; block < MST_CALLS / 5; block++)
    fns
      .map((f, i) => ({ f, i, key: order() }))
      .sort((a, b) => a.key - b.key)
      .forEach(({ f, i }) => {
        f();
        for (let k = 0; k < 5; k++) {
          const t0 = process.hrtime.bigint();
          f();
          times[i].push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
      });
  return times.map((t) => {
    t.sort((a, b) => a - b);
    return { median: t[Math.floor(t.length / 2)], p90: t[Math.floor(t.length * 0.9)] };
  });
}
