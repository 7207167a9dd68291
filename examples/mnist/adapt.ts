// Part 3: test-time adaptation of the BN statistics under distribution shift. The source net of part 1
// (trained on digits 0-4) classifies held-out digits 0-4, each shifted as in data.ts, with the BN
// statistics chosen per test batch:
// - source:        the training statistics (no adaptation)
// - test batch:    moments() of the test batch itself (count = batch · H · W pixels per channel)
// - alpha-BN:      mixStats(source, batch, { sourceWeight: w }): mean = w·μs + (1 − w)·μt, likewise the
//                  variance. w is a plain weight (a fraction), so it does not depend on what is counted.
// - prior BN:      priorStats(source, batch, { priorCount: N }): the mix with w = N / (N + n), where n is
//                  the batch's moments count. xnorm counts n in PIXELS (batch · H · W), while Schneider et
//                  al. state N in images, so N images of prior become priorCount = N · H · W here, with
//                  H · W the spatial size of the layer's input (28·28 for the first BN, 14·14 for the
//                  second): w then equals the paper's N / (N + batch).
import { mixStats, momentsSync, priorStats } from '../../lib';
import { Digits, SHIFTS, Shift, loadMnist, shift, subset } from './data';
import { ConvNet, LAYER_PIXELS, StatsRule, accuracy } from './transfer';

export const PRIOR_IMAGES = 16; // Schneider et al.'s N, in images
export const SOURCE_WEIGHTS = [0.5, 0.8, 0.9];

export interface Method {
  name: string;
  rule?: StatsRule;
}

export function methods(): Method[] {
  const out: Method[] = [{ name: 'source' }, { name: 'test batch', rule: (_l, z) => momentsSync(z) }];
  for (const w of SOURCE_WEIGHTS)
    out.push({ name: `alpha-BN w=${w}`, rule: (_l, z, s) => mixStats(s, momentsSync(z), { sourceWeight: w }) });
  out.push({
    name: `prior BN N=${PRIOR_IMAGES}`,
    rule: (l, z, s) => priorStats(s, momentsSync(z), { priorCount: PRIOR_IMAGES * LAYER_PIXELS[l] }),
  });
  return out;
}

export interface AdaptOptions {
  batchSizes: number[];
  testLimit?: number;
  shifts?: readonly Shift[];
}

/** acc[shift][method][batchSize index] */
export function runAdaptation(net: ConvNet, o: AdaptOptions) {
  const { test } = loadMnist();
  const base: Digits = subset(test, (d) => d < 5, o.testLimit);
  const ms = methods();
  const acc: Record<string, Record<string, number[]>> = {};
  for (const s of o.shifts ?? SHIFTS) {
    const d = shift(base, s);
    acc[s] = {};
    for (const m of ms) acc[s][m.name] = o.batchSizes.map((bs) => accuracy(net, d, 0, bs, m.rule));
  }
  return { acc, methods: ms.map((m) => m.name), n: base.n };
}
