// MST-aware training: a penalty on the latent float weights of a binarized layer that shrinks the total
// Hamming distance over its MST reuse tree, so that the plan made after training reuses more.
import { describe, fail } from './errors';
import { MstPlan, mstPlanSync, packWeightsSync } from './binary';
import { planHandles } from './handles';
import { FLOAT_DTYPES, Tensor, checkTensor, tensor } from './tensor';
import { float32Of, integer, options } from './validate';

/** Options of mstRegularizer. */
export interface MstRegularizerOptions {
  /** The tree to pull along; default a new mstPlan of latent's current signs (reuse 'always'). */
  plan?: MstPlan;
  /** maxDepth of the tree built when no plan is given (as mstPlan; default 8). */
  maxDepth?: number;
  /** groups of the layer (as packWeights; default 1). */
  groups?: number;
  /** tau, in latent units: the width around 0 where a weight's sign is soft (tanh(latent / tau)); default 0.5. */
  temperature?: number;
}

/** What mstRegularizer returns. */
export interface MstRegularizerResult {
  /** The surrogate's value: the soft count of differing positions (tends to totalDistance as tau -> 0). */
  loss: number;
  /** d loss / d latent: float32, latent's shape and device. Add lambda * grad to the task gradient. */
  grad: Tensor;
  /** The exact total Hamming distance of latent's current signs over the tree's edges. */
  totalDistance: number;
  /** The tree used: opts.plan, or the one built for this call (pass it back to keep the tree fixed). */
  plan: MstPlan;
}

const NAME = 'mstRegularizer';

/**
 * A differentiable surrogate of the total MST distance of a binarized layer, for training.
 *
 * The total distance counts, over the tree's edges (c, p = parent[c]), the positions k where
 * sign(latent[c, k]) differs from sign(latent[p, k]); its gradient is zero almost everywhere. The
 * surrogate replaces each sign by t = tanh(latent / tau): loss = Σ_edges Σ_k (1 − t[c, k] · t[p, k]) / 2,
 * the count itself where |latent| ≫ tau. Its gradient moves a weight only near 0 (by 1 − t², so weights
 * far from 0 keep their signs) and toward the sign most of its tree neighbours (its parent and its
 * children) hold there: a bit that agrees with all its neighbours is pushed away from 0 and never
 * flips, so only bits the tree asks to change can flip, and a parent is not pulled toward its own
 * parent against the children that agree with it (a greedy per-edge pull would flip it and raise the
 * distance). Roots move too, toward their children.
 *
 * Cost: O(Cout · K) in JS, plus packWeights and mstPlan when no plan is given.
 * @param latent float weights [Cout, Cin/groups, kh, kw] or [Cout, K]; every value finite
 * @param opts `plan` (its weights' shape must match latent's; its tree is used as is, its weights may
 * be stale), or `maxDepth` and `groups` for the tree built each call; `temperature` (finite, > 0)
 * @example
 * const latent = tensor(new Float32Array(32 * 64 * 3 * 3).map(() => Math.random() - 0.5), [32, 64, 3, 3]);
 * const { plan } = mstRegularizer(latent); // fix the tree once, then each step:
 * const { grad } = mstRegularizer(latent, { plan }); // total grad = taskGrad + lambda * grad
 */
export function mstRegularizer(latent: Tensor, opts?: MstRegularizerOptions): MstRegularizerResult {
  const o = options(opts, `${NAME}: opts`, ['plan', 'maxDepth', 'groups', 'temperature']);
  checkTensor(latent, `${NAME}: latent`, { dtypes: FLOAT_DTYPES, rank: [2, 4] });
  const shape = latent.shape.length === 2 ? [latent.shape[0], latent.shape[1], 1, 1] : latent.shape.slice();
  if (shape.some((d) => d < 1))
    fail('ERR_XNORM_SHAPE', `${NAME}: latent: expected positive sizes, received shape [${latent.shape.join(', ')}]`);
  const tau = o.temperature ?? 0.5;
  if (typeof tau !== 'number' || !Number.isFinite(tau) || tau <= 0)
    fail('ERR_XNORM_ARGUMENT', `${NAME}: opts.temperature: expected a finite number > 0, received ${describe(o.temperature)}`);
  const groups = integer(o.groups, `${NAME}: opts.groups`, 1, 1, 2 ** 30);
  const maxDepth = integer(o.maxDepth, `${NAME}: opts.maxDepth`, 1, 8, 65535);
  if (shape[0] % groups !== 0)
    fail('ERR_XNORM_SHAPE', `${NAME}: latent: Cout = ${shape[0]} is not divisible by groups = ${groups}`);
  if (o.plan !== undefined) checkPlan(o.plan, shape, o.groups, o.maxDepth);
  const values = float32Of(latent, `${NAME}: latent`);
  // A NaN has no sign to pull toward; refusing it also keeps loss and grad finite.
  const bad = values.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) fail('ERR_XNORM_ARGUMENT', `${NAME}: latent[${bad}]: expected a finite number, received ${values[bad]}`);

  const plan = (o.plan as MstPlan | undefined) ?? mstPlanSync(packWeightsSync(latent, { groups }), { reuse: 'always', maxDepth });
  const cout = shape[0];
  const k = latent.size / cout;
  const soft = Float64Array.from(values, (v) => Math.tanh(v / tau));
  const grad = new Float64Array(latent.size);
  let loss = 0;
  let totalDistance = 0;
  for (let c = 0; c < cout; c++) {
    const p = plan.parent[c];
    if (p < 0) continue;
    for (let i = c * k, j = p * k, end = i + k; i < end; i++, j++) {
      if (values[i] < 0 !== values[j] < 0) totalDistance++;
      loss += (1 - soft[i] * soft[j]) / 2;
      // d/dl of (1 - t_c t_p) / 2 through t = tanh(l / tau): -(1 - t²) / (2 tau) times the other end's t.
      grad[i] -= ((1 - soft[i] * soft[i]) * soft[j]) / (2 * tau);
      grad[j] -= ((1 - soft[j] * soft[j]) * soft[i]) / (2 * tau);
    }
  }
  return { loss, grad: tensor(Float32Array.from(grad), latent.shape, { device: latent.device }), totalDistance, plan };
}

/** A plan from mstPlan() for weights of latent's shape; groups and maxDepth, when given, must be its own. */
function checkPlan(plan: unknown, shape: number[], groups: unknown, maxDepth: unknown): void {
  if (!(plan instanceof MstPlan) || !planHandles.has(plan))
    fail('ERR_XNORM_ARGUMENT', `${NAME}: opts.plan: expected an MstPlan from mstPlan(), received ${describe(plan)}`);
  if (plan.weights.shape.some((d, i) => d !== shape[i]))
    fail('ERR_XNORM_SHAPE', `${NAME}: opts.plan: made for weights [${plan.weights.shape.join(', ')}], latent is [${shape.join(', ')}]`);
  if (groups !== undefined && groups !== plan.weights.groups)
    fail('ERR_XNORM_ARGUMENT', `${NAME}: opts.groups: the plan's weights have groups = ${plan.weights.groups}, received ${describe(groups)}`);
  if (maxDepth !== undefined && maxDepth !== plan.maxDepth)
    fail('ERR_XNORM_ARGUMENT', `${NAME}: opts.maxDepth: the plan was made with maxDepth = ${plan.maxDepth}, received ${describe(maxDepth)}`);
}
