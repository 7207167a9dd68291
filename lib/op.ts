// Each op is written once as `prepare(args) -> { call, finish }` and exposed in both forms:
// op() runs the native work on the thread pool and returns a Promise; opSync() runs it here.
// Validation happens in prepare, so both forms reject bad input with the same XnormError.

export interface Prepared<R> {
  /** Starts the native work; returns its result (sync) or a Promise of it (async). */
  call(async: boolean): unknown;
  /** Builds the public result once the native work has finished. */
  finish(nativeResult: unknown): R;
}

export function defineOp<A extends unknown[], R>(
  prepare: (...args: A) => Prepared<R>,
): { async: (...args: A) => Promise<R>; sync: (...args: A) => R } {
  return {
    async: (...args: A) => {
      let p: Prepared<R>;
      let pending: unknown;
      try {
        p = prepare(...args);
        pending = p.call(true);
      } catch (e) {
        return Promise.reject(e);
      }
      return Promise.resolve(pending).then((r) => p.finish(r));
    },
    sync: (...args: A) => {
      const p = prepare(...args);
      return p.finish(p.call(false));
    },
  };
}
