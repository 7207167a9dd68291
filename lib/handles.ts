// The native objects behind BinaryWeights and MstPlan, kept out of the public API (lib/index.ts does not
// export this file; tests use it to hand the handles to the addon directly).
import type { PlanHandle, WeightsHandle } from './native';

export const weightsHandles = new WeakMap<object, WeightsHandle>();
export const planHandles = new WeakMap<object, PlanHandle>();

export function weightsHandle(w: object): WeightsHandle {
  return weightsHandles.get(w)!;
}

export function planHandle(p: object): PlanHandle {
  return planHandles.get(p)!;
}
