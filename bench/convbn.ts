// npm run bench -- convbn: fused Conv + BN on ResNet-18 3x3 layer shapes at batch 8, plus one 1x1 and
// one depthwise layer. In one run: xnorm Tune forward against onnxruntime-node on the same
// Conv + BatchNormalization + Relu graph (ORT folds the BN for inference), GFLOP/s against this
// machine's FP32 FMA peak, Tune against Eval forward+backward (time and bytes kept in between), and
// conv2dBackward on channels-last tensors against channels-first ones.
import { conv2dBackwardSync, convBnBackwardSync, convBnSync, convKernelInfo, fmaPeak, info, setNumThreads, tensor } from '../lib';
import type { ConvBnParams } from '../lib';
import { alternating, fmt, nhwcOf, pytorch, table } from './common';

/** Best time (ms) of `reps` runs after one warm-up: on shared cores, load only ever adds time. */
async function best(f: () => unknown, reps: number): Promise<number> {
  await f();
  let min = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await f();
    min = Math.min(min, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return min;
}

/** Least CPU time (ms, all threads of this process) of `reps` runs after one warm-up. */
async function bestCpu(f: () => unknown, reps: number): Promise<number> {
  await f();
  let min = Infinity;
  for (let i = 0; i < reps; i++) {
    const c0 = process.cpuUsage();
    await f();
    const d = process.cpuUsage(c0);
    min = Math.min(min, (d.user + d.system) / 1000);
  }
  return min;
}

/** Best wall and CPU times of a and b, run alternately so that both see the same machine load. */
async function bestPair(a: () => unknown, b: () => unknown, reps: number): Promise<number[]> {
  const t = [Infinity, Infinity, Infinity, Infinity];  // wall a, wall b, cpu a, cpu b
  const once = async (f: () => unknown, k: number) => {
    const c0 = process.cpuUsage(), t0 = process.hrtime.bigint();
    await f();
    const d = process.cpuUsage(c0);
    t[k] = Math.min(t[k], Number(process.hrtime.bigint() - t0) / 1e6);
    t[k + 2] = Math.min(t[k + 2], (d.user + d.system) / 1000);
  };
  await a();
  await b();
  for (let i = 0; i < reps; i++) {
    await once(a, 0);
    await once(b, 1);
  }
  return t;
}

export interface Layer { name: string; c: number; cout: number; hw: number; k: number; stride: number; pad: number; groups: number }

const BATCH = 8;
const LAYERS: Layer[] = [
  { name: 'conv2_x 3x3 64@56', c: 64, cout: 64, hw: 56, k: 3, stride: 1, pad: 1, groups: 1 },
  { name: 'conv3_x 3x3 128@28', c: 128, cout: 128, hw: 28, k: 3, stride: 1, pad: 1, groups: 1 },
  { name: 'conv4_x 3x3 256@14', c: 256, cout: 256, hw: 14, k: 3, stride: 1, pad: 1, groups: 1 },
  { name: 'conv5_x 3x3 512@7', c: 512, cout: 512, hw: 7, k: 3, stride: 1, pad: 1, groups: 1 },
  { name: '1x1 256->256@14', c: 256, cout: 256, hw: 14, k: 1, stride: 1, pad: 0, groups: 1 },
  { name: 'depthwise 3x3 256@14', c: 256, cout: 256, hw: 14, k: 3, stride: 1, pad: 1, groups: 256 },
];

// ---- a minimal protobuf writer for the ONNX model (field numbers from onnx.proto) ----
class Pb {
  bytes: number[] = [];
  varint(v: number | bigint): this {
    let x = BigInt.asUintN(64, BigInt(v));
    do {
      const b = Number(x & 0x7fn);
      x >>= 7n;
      this.bytes.push(x ? b | 0x80 : b);
    } while (x);
    return this;
  }
  key(field: number, wire: number): this {
    return this.varint((field << 3) | wire);
  }
  int(field: number, v: number): this {
    return this.key(field, 0).varint(v);
  }
  raw(field: number, data: Uint8Array | number[]): this {
    this.key(field, 2).varint(data.length);
    for (const b of data) this.bytes.push(b);
    return this;
  }
  str(field: number, s: string): this {
    return this.raw(field, Array.from(Buffer.from(s, 'utf8')));
  }
  msg(field: number, m: Pb): this {
    return this.raw(field, m.bytes);
  }
  float(field: number, v: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.key(field, 5);
    for (const x of b) this.bytes.push(x);
    return this;
  }
}

const FLOAT = 1;

function tensorProto(name: string, dims: number[], data: Float32Array): Pb {
  const t = new Pb();
  for (const d of dims) t.int(1, d);
  return t.int(2, FLOAT).str(8, name).raw(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
}

function valueInfo(name: string, dims: number[]): Pb {
  const shape = new Pb();
  for (const d of dims) shape.msg(1, new Pb().int(1, d));
  const tensorType = new Pb().int(1, FLOAT).msg(2, shape);
  return new Pb().str(1, name).msg(2, new Pb().msg(1, tensorType));
}

function attrInts(name: string, v: number[]): Pb {
  const a = new Pb().str(1, name).int(20, 7);
  for (const x of v) a.int(8, x);
  return a;
}

function node(op: string, inputs: string[], outputs: string[], attrs: Pb[] = []): Pb {
  const n = new Pb();
  for (const i of inputs) n.str(1, i);
  for (const o of outputs) n.str(2, o);
  n.str(3, `${op}_${outputs[0]}`).str(4, op);
  for (const a of attrs) n.msg(5, a);
  return n;
}

/**
 * Conv -> BatchNormalization -> Relu (Conv -> Relu when bn is null), opset 13, weights as initializers.
 * nhwc: X and Y are NHWC, with the Transpose nodes a converted TensorFlow.js model would give ORT.
 */
export function onnxModel(l: Layer, w: Float32Array, b: Float32Array, bn: Record<'gamma' | 'beta' | 'mean' | 'var', Float32Array> | null,
  eps: number, batch = BATCH, nhwc = false): Uint8Array {
  const g = new Pb();
  const perm = (p: number[]) => [attrInts('perm', p)];
  if (nhwc) g.msg(1, node('Transpose', ['X'], ['XT'], perm([0, 3, 1, 2])));
  g.msg(1, node('Conv', [nhwc ? 'XT' : 'X', 'W', 'B'], ['Z'], [
    attrInts('kernel_shape', [l.k, l.k]), attrInts('pads', [l.pad, l.pad, l.pad, l.pad]),
    attrInts('strides', [l.stride, l.stride]), attrInts('dilations', [1, 1]),
    new Pb().str(1, 'group').int(20, 2).int(3, l.groups),
  ]));
  if (bn) g.msg(1, node('BatchNormalization', ['Z', 'gamma', 'beta', 'mean', 'var'], ['N'], [new Pb().str(1, 'epsilon').int(20, 1).float(2, eps)]));
  g.msg(1, node('Relu', [bn ? 'N' : 'Z'], [nhwc ? 'YT' : 'Y']));
  if (nhwc) g.msg(1, node('Transpose', ['YT'], ['Y'], perm([0, 2, 3, 1])));
  g.str(2, 'convbn');
  g.msg(5, tensorProto('W', [l.cout, l.c / l.groups, l.k, l.k], w));
  g.msg(5, tensorProto('B', [l.cout], b));
  if (bn) for (const k of ['gamma', 'beta', 'mean', 'var'] as const) g.msg(5, tensorProto(k, [l.cout], bn[k]));
  const oh = Math.floor((l.hw + 2 * l.pad - l.k) / l.stride) + 1;
  g.msg(11, valueInfo('X', nhwc ? [batch, l.hw, l.hw, l.c] : [batch, l.c, l.hw, l.hw]));
  g.msg(12, valueInfo('Y', nhwc ? [batch, oh, oh, l.cout] : [batch, l.cout, oh, oh]));
  const m = new Pb().int(1, 8).str(2, 'xnorm-bench').msg(7, g).msg(8, new Pb().str(1, '').int(2, 13));
  return Uint8Array.from(m.bytes);
}

export function filled(n: number, seed: number, scale: number, offset = 0): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = offset + scale * (s / 2 ** 32 - 0.5);
  }
  return a;
}

export async function run(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
  const threads = info().cpu.threads;
  let peak = await fmaPeak(0.5);
  console.log(`conv micro-kernel ${convKernelInfo()}; FP32 FMA peak ${fmt(peak)} GFLOP/s on ${threads} threads; ` +
    `onnxruntime-node ${require('onnxruntime-node/package.json').version} with ${threads} intra-op threads, all graph optimisations`);
  const fwd: (string | number)[][] = [];
  const train: (string | number)[][] = [];
  const backward: string[][] = [];
  const cpu: (string | number)[][] = [];
  for (const [li, l] of LAYERS.entries()) {
    const oh = Math.floor((l.hw + 2 * l.pad - l.k) / l.stride) + 1;
    const flops = 2 * BATCH * l.cout * oh * oh * (l.c / l.groups) * l.k * l.k;
    const wv = filled(l.cout * (l.c / l.groups) * l.k * l.k, 10 + li, Math.sqrt(6 / ((l.c / l.groups) * l.k * l.k)));
    const bv = filled(l.cout, 20 + li, 0.2);
    const bnv = { gamma: filled(l.cout, 30 + li, 0.5, 1), beta: filled(l.cout, 40 + li, 0.2), mean: filled(l.cout, 50 + li, 0.2), var: filled(l.cout, 60 + li, 0.5, 1) };
    const eps = 1e-5;
    const xv = filled(BATCH * l.c * l.hw * l.hw, 70 + li, 2);
    const x = tensor(xv, [BATCH, l.c, l.hw, l.hw]);
    const p: ConvBnParams = {
      weight: tensor(wv, [l.cout, l.c / l.groups, l.k, l.k]),
      bias: tensor(bv, [l.cout]),
      bn: { mean: tensor(bnv.mean, [l.cout]), var: tensor(bnv.var, [l.cout]), gamma: tensor(bnv.gamma, [l.cout]), beta: tensor(bnv.beta, [l.cout]), eps },
    };
    const o = { stride: l.stride, padding: l.pad, groups: l.groups, activation: 'relu' as const };

    // ORT's intra-op threads spin after each run and would steal the cores from xnorm, so the two are
    // never timed while the other's threads are alive: xnorm, then an ORT session, twice over.
    const reps = flops > 1e9 ? 7 : 15;
    const model = onnxModel(l, wv, bv, bnv, eps);
    const feeds = { X: new ort.Tensor('float32', xv, [BATCH, l.c, l.hw, l.hw]) };
    let tuneMs = Infinity, ortMs = Infinity;
    for (let round = 0; round < 2; round++) {
      tuneMs = Math.min(tuneMs, await best(() => convBnSync(x, p, o).y.dispose(), reps));
      const session = await ort.InferenceSession.create(model, {
        intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
      });
      if (round === 0) {
        // Same answer first: a benchmark of two different computations would mean nothing.
        const ortY = (await session.run(feeds)).Y.data as Float32Array;
        const ours = convBnSync(x, p, o).y.dataSync() as Float32Array;
        let maxDiff = 0, scale = 1;
        for (let i = 0; i < ours.length; i++) {
          maxDiff = Math.max(maxDiff, Math.abs(ours[i] - ortY[i]));
          scale = Math.max(scale, Math.abs(ortY[i]));
        }
        if (!(maxDiff <= 1e-4 * scale)) throw new Error(`${l.name}: xnorm and onnxruntime disagree (max diff ${maxDiff})`);
      }
      ortMs = Math.min(ortMs, await best(() => session.run(feeds), reps));
      await session.release();
    }
    fwd.push([l.name, fmt(tuneMs), fmt(ortMs), `${fmt(ortMs / tuneMs)}x`, flops / tuneMs / 1e6, flops]);

    // The same comparison in CPU time on one thread each: work done, which other load on a shared
    // machine barely changes (ORT's spinning is switched off here so that idle waits are not counted).
    setNumThreads(1);
    const tuneCpu = await bestCpu(() => convBnSync(x, p, o).y.dispose(), reps);
    setNumThreads(threads);
    const single = await ort.InferenceSession.create(model, {
      intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    const ortCpu = await bestCpu(() => single.run(feeds), reps);
    await single.release();
    cpu.push([l.name, fmt(tuneCpu), fmt(ortCpu), `${fmt(ortCpu / tuneCpu)}x`, flops / tuneCpu / 1e6]);

    // Forward + backward, all five gradients, Tune against Eval.
    const dy = tensor(filled(BATCH * l.cout * oh * oh, 80 + li, 1), [BATCH, l.cout, oh, oh]);
    const step = (mode: 'tune' | 'eval') => {
      const { y, saved } = convBnSync(x, p, { ...o, mode, saveForBackward: true });
      const g = convBnBackwardSync(saved!, dy);
      const bytes = saved!.bytes;
      saved!.dispose();
      y.dispose();
      for (const t of Object.values(g)) t.dispose();
      return bytes;
    };
    const tuneBytes = step('tune'), evalBytes = step('eval');
    const [tuneTrain, evalTrain, tuneCpuT, evalCpuT] = await bestPair(() => step('tune'), () => step('eval'), flops > 1e9 ? 7 : 11);
    train.push([l.name, fmt(tuneTrain), fmt(evalTrain), `${fmt(evalTrain / tuneTrain)}x`, `${fmt(evalCpuT / tuneCpuT)}x`,
      fmt(tuneBytes / 2 ** 20), fmt(evalBytes / 2 ** 20), fmt(tuneBytes / evalBytes)]);

    // conv2dBackward (dx and dWeight into the same out tensors every call), channels-last against
    // channels-first, at batch 8 and 1.
    for (const n of [BATCH, 1]) {
      const xs = x.dataSync() as Float32Array, dys = dy.dataSync() as Float32Array;
      const nchw = { x: tensor(xs.subarray(0, n * l.c * l.hw * l.hw), [n, l.c, l.hw, l.hw]), dy: tensor(dys.subarray(0, n * l.cout * oh * oh), [n, l.cout, oh, oh]) };
      const nhwc = { x: tensor(nhwcOf(nchw.x.dataSync() as Float32Array, n, l.c, l.hw), [n, l.hw, l.hw, l.c]),
        dy: tensor(nhwcOf(nchw.dy.dataSync() as Float32Array, n, l.cout, oh), [n, oh, oh, l.cout]) };
      const outs = (t: { x: { shape: readonly number[] } }) => ({ dx: tensor(new Float32Array(n * l.c * l.hw * l.hw), t.x.shape), dWeight: tensor(new Float32Array(p.weight.size), p.weight.shape) });
      const oc = outs(nchw), ol = outs(nhwc);
      const geo = { stride: l.stride, padding: l.pad, groups: l.groups };
      const [c, last] = await alternating(() => conv2dBackwardSync(nchw.x, p.weight, nchw.dy, { ...geo, out: oc }),
        () => conv2dBackwardSync(nhwc.x, p.weight, nhwc.dy, { ...geo, layout: 'nhwc', out: ol }), flops * n / BATCH > 1e9 ? 9 : 21);
      backward.push([`${l.name} b${n}`, `${fmt(c.median)} / ${fmt(c.p90)}`, `${fmt(last.median)} / ${fmt(last.p90)}`, `${fmt(last.median / c.median)}x`]);
    }
  }
  // PyTorch on the CPU (where installed): conv2d, eval-mode batch_norm and relu, same threads, best of 7.
  const torchOut = pytorch(`
import torch, time
torch.set_num_threads(${threads})
torch.manual_seed(0)
for c, cout, hw, k, stride, pad, groups in ${JSON.stringify(LAYERS.map((l) => [l.c, l.cout, l.hw, l.k, l.stride, l.pad, l.groups]))}:
    x = torch.randn(${BATCH}, c, hw, hw)
    w = torch.randn(cout, c // groups, k, k) * 0.05
    b, m, v, g, be = torch.randn(cout), torch.randn(cout), torch.rand(cout) + 0.5, torch.randn(cout), torch.randn(cout)
    def f():
        with torch.no_grad():
            y = torch.nn.functional.conv2d(x, w, b, stride, pad, 1, groups)
            return torch.relu(torch.nn.functional.batch_norm(y, m, v, g, be, False, 0.0, 1e-5))
    f()
    ts = []
    for i in range(7):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    print(min(ts) * 1000)
`);
  const torchMs = (torchOut ?? '').trim().split('\n').filter(Boolean).map(Number);
  fwd.forEach((r, i) => r.splice(4, 0, torchMs[i] ? `${fmt(torchMs[i])} (${fmt(torchMs[i] / Number(r[1]))}x)` : 'not installed'));

  // The peak again at the end: on a shared machine the better of the two is the closer to the truth.
  peak = Math.max(peak, await fmaPeak(0.5));
  for (const r of fwd) r[6] = `${fmt((100 * (r[5] as number)) / peak)}%`;
  console.log(`\nFP32 FMA peak (best of two probes): ${fmt(peak)} GFLOP/s`);
  const algo = process.env.XNORM_CONV_ALGO === 'gemm' ? 'im2col GEMM (XNORM_CONV_ALGO=gemm)' : 'Winograd F(4x4, 3x3) or F(2x2, 3x3) (see DESIGN.md)';
  console.log(`\nForward, batch ${BATCH}, conv + BN + ReLU (best ms; ratio > 1: xnorm faster). 3x3 layers: ${algo}; ` +
    `GFLOP/s counts the direct convolution's FLOPs, so Winograd's effective rate can pass the FMA peak\n`);
  console.log(table(['layer', 'xnorm tune ms', 'ORT ms', 'ORT/xnorm', 'PyTorch ms (/xnorm)', 'xnorm GFLOP/s', 'of FMA peak'], fwd));
  console.log(`\nForward on one thread, CPU time (best ms; robust to other load on the machine)\n`);
  console.log(table(['layer', 'xnorm tune CPU ms', 'ORT CPU ms', 'ORT/xnorm', 'xnorm GFLOP/CPU-s'], cpu));
  console.log(`\nForward + backward (all 5 gradients), Tune vs Eval; saved = bytes kept between forward and backward\n`);
  console.log(table(['layer', 'tune ms', 'eval ms', 'eval/tune', 'eval/tune CPU', 'tune saved MiB', 'eval saved MiB', 'tune/eval bytes'], train));
  console.log(`\nconv2dBackward (dx and dWeight), channels-last against channels-first, median / p90 ms of alternating calls\n`);
  console.log(table(['layer', 'NCHW ms', 'NHWC ms', 'NHWC/NCHW (medians)'], backward));
}
