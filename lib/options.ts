// Options objects, checked the same way everywhere: undefined or null is {}, anything else must be a
// plain object whose keys the caller knows. Its own module so tensor.ts can use it (validate.ts, which
// re-exports it, depends on tensor.ts).
import { describe, fail } from './errors';

/**
 * An options object (undefined or null: {}). Keys outside `known` are refused, so a misspelt option
 * (`pad` for `padding`) fails instead of silently running with the default.
 */
export function options(opts: unknown, name: string, known: readonly string[]): Record<string, unknown> {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object' || Array.isArray(opts))
    fail('ERR_XNORM_ARGUMENT', `${name}: expected an options object, received ${describe(opts)}`);
  for (const key of Object.keys(opts))
    if (!known.includes(key))
      fail('ERR_XNORM_ARGUMENT', `${name}: unknown option '${key}' (expected ${known.map((k) => `'${k}'`).join(', ')})`);
  return opts as Record<string, unknown>;
}
