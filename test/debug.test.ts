// XNORM_DEBUG=1 reports each choice on stderr ("[xnorm] ..."); without it xnorm prints nothing.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { describe, expect, it } from 'vitest';

function run(debug: string) {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'children', 'debug-log.cjs')], {
    env: { ...process.env, XNORM_DEBUG: debug, XNORM_CUDA_PLUGIN: path.join(__dirname, 'no-such-plugin.so'), XNORM_CUDA_PROBE: '' },
    encoding: 'utf8',
  });
  expect(r.status, r.stderr).toBe(0);
  return r.stderr.split('\n').filter((l) => l.length > 0);
}

describe('XNORM_DEBUG', () => {
  it('logs the addon, the conv path per call shape, MST calibration, trial and execution, and the CUDA probe', () => {
    const lines = run('1');
    expect(lines.every((l) => l.startsWith('[xnorm] ')), lines.join('\n')).toBe(true);
    const has = (re: RegExp) => expect(lines.filter((l) => re.test(l)).length, `${re}\n${lines.join('\n')}`);
    has(/^\[xnorm\] addon loaded: .*xnorm.*\.node; ISA \w+ \(.*\); \d+ threads/).toBe(1);
    // three identical 3x3 calls give one line; the 1x1 its own
    has(/conv forward NCHW x 1x64x8x8, w 64x64x3x3, stride 1x1, pad 1x1, dilation 1x1, groups 1: .+ \(micro-kernel \d+x\d+ \w+\)$/).toBe(1);
    // a 1x1 on a narrow map takes the channels-last GEMM with its pixels as M (algorithm.cc): one image
    // is read as it is, two are copied channels-last first; prepared weights are named
    has(/conv forward NCHW x 1x64x8x8, w 32x64x1x1, .*groups 1: channels-last GEMM, pixels as M, reading NCHW x as it is \(1x1, one image\)/).toBe(1);
    has(/conv forward NCHW x 2x64x8x8, w 32x64x1x1, .*groups 1, prepared weights: GEMM on a channels-last copy of x \(narrow map\)/).toBe(1);
    has(/MST calibration, int32 output \(ns per pixel\): reuse [\d.]+ per differing bit/).toBe(1);
    // per tree (float output first, then, if it kept nothing, 'bits'): the cost model rules the edges
    // out or the timed trial decides (machine-dependent)
    const verdict = (out: string) =>
      new RegExp(`MST trial, ${out} output, 128 channels \\(\\d+ edges\\), 256x3x3 per channel: plan [\\d.]+ us vs dense [\\d.]+ us \\(best of \\d+; median ratio [\\d.]+\\): edges (kept|dropped)|` +
        `MST 'auto' tree for ${out} output, 128 channels: the cost model (saves [\\d.]+ ns per pixel, less than the plan's [\\d.]+: no edges, no trial|finds no edge that pays)`);
    has(verdict('float')).toBe(1);
    const floatKept = lines.some((l) => /MST trial, float output, .*: edges kept/.test(l));
    has(verdict("'bits'")).toBe(floatKept ? 0 : 1);
    has(/MST calibration, 'bits' output \(ns per pixel\)/).toBe(floatKept ? 0 : 1);
    const bitsKept = lines.some((l) => /MST trial, 'bits' output, .*: edges kept/.test(l));
    // below the build trial's 512 output pixels, the first call of a size times the kept edges on its own
    // input (float output here: a plan kept for 'bits' output runs dense without one)
    has(/MST trial at 16 output pixels, 128 channels: plan [\d.]+ us vs dense [\d.]+ us .*: edges (kept|dropped)/).toBe(floatKept ? 1 : 0);
    has(
      floatKept
        ? /binaryConv2d with an MST plan, 16 output pixels: runs (its reuse edges|dense \(its edges were not faster at this size in its trial\))$/
        : bitsKept
          ? /binaryConv2d with an MST plan, 16 output pixels: runs dense \(its edges pay only for bit-sliced 'bits' output\)$/
          : /binaryConv2d with an MST plan, 16 output pixels: runs dense \(the plan has no reuse edges\)$/,
    ).toBe(1);
    has(/CUDA probe: .*no-such-plugin\.so: not found/).toBe(1);
    has(/CUDA probe: CUDA unavailable: the CUDA plugin .* is not installed/).toBe(1);
  });

  it('is silent when unset or 0', () => {
    expect(run('')).toEqual([]);
    expect(run('0')).toEqual([]);
  });
});
