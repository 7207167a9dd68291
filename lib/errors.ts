/** Stable error codes; see docs/API.md "Errors". */
export type XnormErrorCode =
  | 'ERR_XNORM_SHAPE'
  | 'ERR_XNORM_DTYPE'
  | 'ERR_XNORM_DEVICE'
  | 'ERR_XNORM_ARGUMENT'
  | 'ERR_XNORM_DISPOSED'
  | 'ERR_XNORM_CUDA_UNAVAILABLE'
  | 'ERR_XNORM_OUT_OF_MEMORY'
  | 'ERR_XNORM_NATIVE_LOAD'
  | 'ERR_XNORM_CORRUPT_PLAN';

/**
 * Every failure xnorm reports, from TypeScript or from the native addon. `code` is stable (see
 * XnormErrorCode); the message names the argument, what was expected and what was received.
 * @example
 * try {
 *   await moments(zeros([4]));
 * } catch (e) {
 *   if (e instanceof XnormError && e.code === 'ERR_XNORM_SHAPE') console.error(e.message);
 * }
 */
export class XnormError extends Error {
  readonly code: XnormErrorCode;
  constructor(code: XnormErrorCode, message: string) {
    super(message);
    this.name = 'XnormError';
    this.code = code;
  }
}

/** A short description of a received value for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return `'${v}'`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return v.length <= 8 ? `[${v.map(describe).join(', ')}]` : `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
  if (typeof v === 'function') return 'a function';
  const name = (v as object).constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}

export function fail(code: XnormErrorCode, message: string): never {
  throw new XnormError(code, message);
}
