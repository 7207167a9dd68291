// MST-aware training: a penalty on the latent float weights of a binarized layer that shrinks the total
// Hamming distance over its MST reuse tree, so that the plan made after training reuses more.
import { describe, fail } from './errors';
import { MstPlan, mstPlan, packWeights } from './binary';
import { planHandles } from './handles';
import { FLOAT_DTYPES, Tensor, checkTensor, tensor } from './tensor';
import { float32Of, integer, options } from './validate';

export interface MstRegularizerOptions {
  /** The tree to pull along; default a new mstPlan of latent's current signs (reuse 'always'). */
  plan?: MstPlan;
  /** maxDepth of the tree built when no plan is given (as mstPlan; default 8). */
  maxDepth?: number;
  /** groups of the layer (as packWeights; default 1). */
  groups?: number;
  /** Agreeing positions closer than this to 0 are pushed away from it too; default 0. */
  margin?: number;
}

export interface MstRegularizerResult {
  /** The surrogate's value (sum of hinge terms). */
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
 * surrogate is loss = Σ_edges Σ_k relu(margin − latent[c, k] · s[p, k]), with s[p, k] = ±1 the
 * parent's current sign taken as a constant target (signs as packWeights: latent < 0 is −1, 0 is +1).
 * With margin 0 its terms are non-zero only on differing positions, where they equal |latent[c, k]|:
 * the latent mass to move for the child to agree with its parent. The gradient, −s[p, k] on those
 * positions and 0 elsewhere, moves only the bits the tree asks to change, child toward parent: a
 * parent is never pulled toward its children, which would undo its own edge to its parent. At the
 * kink latent[c, k] = 0 with s[p, k] = −1 (a differing bit whose term is 0) the gradient is still
 * −s[p, k], so such a bit moves too. margin > 0 also pushes agreeing positions to at least margin
 * from 0; they never flip. Roots contribute nothing.
 *
 * Cost: O(Cout · K) in JS, plus packWeights and mstPlan when no plan is given.
 * @param latent float weights [Cout, Cin/groups, kh, kw] or [Cout, K]; every value finite
 * @param opts `plan` (its weights' shape must match latent's; its tree is used as is, its weights may
 * be stale), or `maxDepth` and `groups` for the tree built each call; `margin` (finite, >= 0)
 * @example
 * const { plan } = mstRegularizer(latent); // fix the tree once, then each step:
 * const { grad } = mstRegularizer(latent, { plan }); // total grad = taskGrad + lambda * grad
 */
export function mstRegularizer(latent: Tensor, opts?: MstRegularizerOptions): MstRegularizerResult {
  const o = options(opts, `${NAME}: opts`, ['plan', 'maxDepth', 'groups', 'margin']);
  checkTensor(latent, `${NAME}: latent`, { dtypes: FLOAT_DTYPES, rank: [2, 4] });
  const shape = latent.shape.length === 2 ? [latent.shape[0], latent.shape[1], 1, 1] : latent.shape.slice();
  if (shape.some((d) => d < 1))
    fail('ERR_XNORM_SHAPE', `${NAME}: latent: expected positive sizes, received shape [${latent.shape.join(', ')}]`);
  const margin = o.margin ?? 0;
  if (typeof margin !== 'number' || !Number.isFinite(margin) || margin < 0)
    fail('ERR_XNORM_ARGUMENT', `${NAME}: opts.margin: expected a finite number >= 0, received ${describe(o.margin)}`);
  const groups = integer(o.groups, `${NAME}: opts.groups`, 1, 1, 2 ** 30);
  const maxDepth = integer(o.maxDepth, `${NAME}: opts.maxDepth`, 1, 8, 65535);
  if (shape[0] % groups !== 0)
    fail('ERR_XNORM_SHAPE', `${NAME}: latent: Cout = ${shape[0]} is not divisible by groups = ${groups}`);
  if (o.plan !== undefined) checkPlan(o.plan, shape, o.groups, o.maxDepth);
  const values = float32Of(latent, `${NAME}: latent`);
  // A NaN has no sign to pull toward; refusing it also keeps loss and grad finite.
  const bad = values.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) fail('ERR_XNORM_ARGUMENT', `${NAME}: latent[${bad}]: expected a finite number, received ${values[bad]}`);

  const plan = (o.plan as MstPlan | undefined) ?? mstPlan(packWeights(latent, { groups }), { reuse: 'always', maxDepth });
  const cout = shape[0];
  const k = latent.size / cout;
  const grad = new Float32Array(latent.size);
  let loss = 0;
  let totalDistance = 0;
  for (let c = 0; c < cout; c++) {
    const p = plan.parent[c];
    if (p < 0) continue;
    for (let i = c * k, j = p * k, end = i + k; i < end; i++, j++) {
      const w = values[i];
      const s = values[j] < 0 ? -1 : 1;
      const differs = (w < 0) !== (s < 0);
      if (differs) totalDistance++;
      if (differs || w * s < margin) {
        loss += margin - w * s;
        grad[i] = -s;
      }
    }
  }
  return { loss, grad: tensor(grad, latent.shape, { device: latent.device }), totalDistance, plan };
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
