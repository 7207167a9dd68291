// XNORM_DEBUG=1: the JS side of the debug log (the addon writes its own lines, with the same prefix, from
// native/core/common/debug.cc): one line on stderr per choice made.
const on = ((v) => v !== undefined && v !== '' && v !== '0' && v !== 'false')(process.env.XNORM_DEBUG);

/** Writes "[xnorm] message" to stderr when XNORM_DEBUG is set. */
export function debugLog(message: string): void {
  if (on) process.stderr.write(`[xnorm] ${message}\n`);
}

/** Whether XNORM_DEBUG is set (for log lines that cost something to build). */
export function debugEnabled(): boolean {
  return on;
}
