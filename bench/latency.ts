// npm run bench -- latency: what an inference server feels, one request at a time. Batch 1 and 8, NCHW
// and NHWC, each row against onnxruntime-node on the same graph in the same run, as ratios of medians
// (ORT / xnorm: > 1 means xnorm is faster), with p90 and best beside them:
// - float conv + bias + ReLU with prepared weights (Deploy) and Tune-mode convBn (folds per call), on
//   ResNet-18's 3x3 layers, its 1x1 stride-2 downsample and MobileNet-v1's depthwise + pointwise pairs;
//   ORT runs Conv + BatchNormalization + Relu (it folds the BN when the session is made), NHWC through
//   the Transpose nodes a converted TensorFlow.js model carries;
// - binaryConv2d (packed weights, packed input) on the ResNet shapes against ORT's float conv;
// - moments and packBits against this machine's streaming read bandwidth;
// - a tiny op's round trip, Sync and Promise.
import {
  binaryConv2dSync,
  conv2d,
  conv2dSync,
  convBnSync,
  foldConvBn,
  info,
  moments,
  momentsSync,
  packBitsSync,
  packWeightsSync,
  prepareConvSync,
  tensor,
} from '../lib';
import type { Layout, Tensor } from '../lib';
import { native } from '../lib/native';
import { fmt, nhwcOf, stats, table } from './common';
import type { Stats } from './common';
import { filled, onnxModel } from './convbn';
import type { Layer } from './convbn';

const show = (s: Stats) => `${fmt(s.median)} / ${fmt(s.p90)} / ${fmt(s.best)}`;
const ratio = (peer: Stats, ours: Stats) => `${fmt(peer.median / ours.median)}x`;

const l3 = (name: string, c: number, hw: number): Layer => ({ name, c, cout: c, hw, k: 3, stride: 1, pad: 1, groups: 1 });
const dw = (c: number, hw: number): Layer => ({ name: `dw 3x3 ${c}@${hw}`, c, cout: c, hw, k: 3, stride: 1, pad: 1, groups: c });
const pw = (c: number, cout: number, hw: number): Layer => ({ name: `pw 1x1 ${c}->${cout}@${hw}`, c, cout, hw, k: 1, stride: 1, pad: 0, groups: 1 });

const RESNET: Layer[] = [l3('3x3 64@56', 64, 56), l3('3x3 128@28', 128, 28), l3('3x3 256@14', 256, 14), l3('3x3 512@7', 512, 7)];
const LAYERS: Layer[] = [
  ...RESNET,
  { name: '1x1 s2 128->256@28', c: 128, cout: 256, hw: 28, k: 1, stride: 2, pad: 0, groups: 1 },
  dw(32, 112), pw(32, 64, 112), dw(128, 56), pw(128, 128, 56), dw(256, 28), pw(256, 256, 28),
  dw(512, 14), pw(512, 512, 14), dw(1024, 7), pw(1024, 1024, 7),
];

type Ort = typeof import('onnxruntime-node');

/** ORT on one model: a fresh session per measurement, released after it (its intra-op threads spin and would steal the cores). */
async function ortStats(ort: Ort, model: Uint8Array, feeds: Record<string, import('onnxruntime-node').Tensor>): Promise<Stats> {
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: info().cpu.threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
  });
  try {
    return await stats(() => session.run(feeds));
  } finally {
    await session.release();
  }
}

async function floatConvs(ort: Ort, orts: Map<string, Stats>): Promise<void> {
  const rows: (string | number)[][] = [];
  for (const batch of [1, 8])
    for (const layout of ['nchw', 'nhwc'] as Layout[])
      for (const [li, l] of LAYERS.entries()) {
        const cinG = l.c / l.groups;
        const wv = filled(l.cout * cinG * l.k * l.k, 10 + li, Math.sqrt(6 / (cinG * l.k * l.k)));
        const bv = filled(l.cout, 20 + li, 0.2);
        const bnv = { gamma: filled(l.cout, 30 + li, 0.5, 1), beta: filled(l.cout, 40 + li, 0.2), mean: filled(l.cout, 50 + li, 0.2), var: filled(l.cout, 60 + li, 0.5, 1) };
        const nchw = filled(batch * l.c * l.hw * l.hw, 70 + li, 2);
        const xv = layout === 'nchw' ? nchw : nhwcOf(nchw, batch, l.c, l.hw);
        const xShape = layout === 'nchw' ? [batch, l.c, l.hw, l.hw] : [batch, l.hw, l.hw, l.c];
        const x = tensor(xv, xShape);
        const ch = (v: Float32Array) => tensor(v, [l.cout]);
        const p = { weight: tensor(wv, [l.cout, cinG, l.k, l.k]), bias: ch(bv), bn: { mean: ch(bnv.mean), var: ch(bnv.var), gamma: ch(bnv.gamma), beta: ch(bnv.beta), eps: 1e-5 } };
        const o = { stride: l.stride, padding: l.pad, groups: l.groups, activation: 'relu' as const, layout };
        // Deploy: folded and prepared once, as a server would at start-up.
        const { weight: cw, bias } = foldConvBn(p, { prepare: true, groups: l.groups });
        const deploy = await stats(() => conv2dSync(x, cw, bias, o).dispose());
        const tune = await stats(() => convBnSync(x, p, o).y.dispose());
        const peer = await ortStats(ort, onnxModel(l, wv, bv, bnv, 1e-5, batch, layout === 'nhwc'), { X: new ort.Tensor('float32', xv, xShape) });
        if (layout === 'nchw') orts.set(`${l.name} ${batch}`, peer);
        cw.dispose();
        rows.push([String(batch), layout, l.name, show(deploy), show(tune), show(peer), ratio(peer, deploy), ratio(peer, tune)]);
      }
  console.log('Float conv + bias + ReLU, ms as median / p90 / best; ratios of medians, ORT / xnorm (> 1: xnorm faster)\n');
  console.log(table(['batch', 'layout', 'layer', 'xnorm prepared (Deploy)', 'xnorm Tune', 'onnxruntime', 'Deploy vs ORT', 'Tune vs ORT'], rows));
}

async function binaryConvs(orts: Map<string, Stats>): Promise<void> {
  const rows: (string | number)[][] = [];
  for (const batch of [1, 8])
    for (const [li, l] of RESNET.entries()) {
      const w = packWeightsSync(tensor(filled(l.cout * l.c * 9, 80 + li, 1), [l.cout, l.c, 3, 3]));
      const xb = packBitsSync(tensor(filled(batch * l.c * l.hw * l.hw, 90 + li, 2), [batch, l.c, l.hw, l.hw]));
      const ours = await stats(() => binaryConv2dSync(xb, w, { padding: 1 }).dispose());
      const bits = await stats(() => binaryConv2dSync(xb, w, { padding: 1, output: 'bits' }).dispose());
      const peer = orts.get(`${l.name} ${batch}`)!;
      rows.push([String(batch), l.name, show(ours), show(bits), show(peer), ratio(peer, ours), ratio(peer, bits)]);
    }
  console.log('\nbinaryConv2d (packed input and weights, NHWC) against ORT\'s float conv on the same shape (NCHW row above)\n');
  console.log(table(['batch', 'layer', 'binary float out', "binary 'bits' out", 'ORT float conv', 'float out vs ORT', 'bits vs ORT'], rows));
}

async function reductions(): Promise<void> {
  const total = 1 << 23;  // 32 MiB of float32: past the caches
  const big = filled(total, 7, 2);
  const read = await stats(() => native().readSum(new Uint32Array(big.buffer) as never));
  const readGBs = (total * 4) / read.median / 1e6;
  const rows: (string | number)[][] = [];
  for (const c of [3, 16, 64, 256, 1024]) {
    const hw = Math.floor(total / 8 / c / 64) * 64;
    const bytes = 8 * c * hw * 4;
    for (const layout of ['nchw', 'nhwc'] as Layout[]) {
      const x: Tensor = tensor(big.subarray(0, 8 * c * hw), layout === 'nchw' ? [8, c, hw, 1] : [8, hw, 1, c]);
      const m = await stats(() => momentsSync(x, { layout }));
      const pb = await stats(() => packBitsSync(x, { layout }).dispose());
      const pct = (s: Stats) => `${fmt((100 * bytes) / s.median / 1e6 / readGBs)}%`;
      rows.push([String(c), layout, show(m), pct(m), show(pb), pct(pb)]);
    }
  }
  console.log(`\nmoments and packBits on 32 MiB of float32 [8, C, H*W]; streaming read ${fmt(readGBs)} GB/s (median) in this run\n`);
  console.log(table(['C', 'layout', 'moments ms', 'of read bw', 'packBits ms', 'of read bw'], rows));
}

async function overhead(): Promise<void> {
  const x = tensor(new Float32Array(16), [1, 4, 2, 2]);
  const w = tensor(new Float32Array(4 * 4 * 9), [4, 4, 3, 3]);
  const rows: string[][] = [];
  const us = (s: Stats) => `${fmt(s.median * 1e3)} / ${fmt(s.p90 * 1e3)} / ${fmt(s.best * 1e3)}`;
  rows.push(['momentsSync', us(await stats(() => momentsSync(x), 100, 2000, 20000))]);
  rows.push(['await moments (small memory-bound ops run inline)', us(await stats(() => moments(x), 100, 500, 5000))]);
  rows.push(['conv2dSync', us(await stats(() => conv2dSync(x, w, undefined, { padding: 1 }), 100, 2000, 20000))]);
  rows.push(['await conv2d (tiny convs run inline)', us(await stats(() => conv2d(x, w, undefined, { padding: 1 }), 100, 500, 5000))]);
  // Just above the inline limit (2^16 multiply-adds): the Promise form's trip through the pools.
  const xp = tensor(new Float32Array(32 * 16), [1, 32, 4, 4]);
  const wp = tensor(new Float32Array(32 * 32 * 9), [32, 32, 3, 3]);
  rows.push(['conv2dSync 32->32 3x3 on 4x4 (147,456 MACs)', us(await stats(() => conv2dSync(xp, wp, undefined, { padding: 1 }), 100, 2000, 20000))]);
  rows.push(['await conv2d 32->32 3x3 on 4x4 (through the thread pool)', us(await stats(() => conv2d(xp, wp, undefined, { padding: 1 }), 100, 500, 5000))]);
  console.log('\nA tiny op\'s round trip (16 floats; then a small conv above the inline limit), µs as median / p90 / best\n');
  console.log(table(['form', 'µs'], rows));
}

export async function run(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ort = require('onnxruntime-node') as Ort;
  console.log(`onnxruntime-node ${require('onnxruntime-node/package.json').version}, ${info().cpu.threads} intra-op threads, all graph optimisations\n`);
  const orts = new Map<string, Stats>();
  await floatConvs(ort, orts);
  await binaryConvs(orts);
  await reductions();
  await overhead();
}
