// Child process for the detach tests (a use-after-free would crash the process, not just fail a test):
// the memory behind an input is transferred away (postMessage, structuredClone) while async ops read it,
// and a getter of a later argument detaches an array the addon read before. Prints a JSON report.
'use strict';
const path = require('path');
const { MessageChannel } = require('worker_threads');
const X = require(path.join(__dirname, '..', '..', 'dist', 'cjs', 'index.js'));
const { native } = require(path.join(__dirname, '..', '..', 'dist', 'cjs', 'native.js'));

const rnd = (n, seed) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5);
const same = (a, b) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
const codeOf = (fn) => { try { fn(); return 'no error'; } catch (e) { return e.code || `${e.name}: ${e.message}`; } };

async function main() {
  const report = {};
  const shape = [2, 16, 20, 20];
  const a = rnd(2 * 16 * 20 * 20, 1);
  const want = { m: X.momentsSync(X.tensor(a.slice(), shape)).mean.dataSync() };
  const weight = X.tensor(rnd(16 * 16 * 9, 2), [16, 16, 3, 3]);
  const bn = { mean: X.tensor(rnd(16, 3), [16]), var: X.tensor(new Float32Array(16).fill(1), [16]) };
  want.y = X.convBnSync(X.tensor(a.slice(), shape), { weight, bn }, { padding: 1 }).y.dataSync();

  // 1. Transfer the shared memory away while async ops read it: the transfers copy instead.
  const x = X.from({ data: a, shape });
  const pending = [X.moments(x), X.convBn(x, { weight, bn }, { padding: 1 })];
  const { port1, port2 } = new MessageChannel();
  port1.postMessage(a.buffer, [a.buffer]);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  global.gc?.();
  const [m, c] = await Promise.all(pending);
  report.transferWhilePending = { stillAttached: a.length > 0, momentsSame: same(m.mean.dataSync(), want.m), convSame: same(c.y.dataSync(), want.y) };
  port1.close();
  port2.close();

  // 2. An array detached before a call: a coded error naming it, and the tensor reports disposed.
  const b = rnd(2 * 16 * 20 * 20, 4);
  const xb = X.from({ data: b, shape });
  structuredClone(b.buffer, { transfer: [b.buffer] });
  report.detachedBefore = {
    disposed: xb.disposed,
    sync: codeOf(() => X.momentsSync(xb)),
    async: await X.moments(xb).then(() => 'no error', (e) => e.code),
    dataSync: codeOf(() => xb.dataSync()),
    copy: codeOf(() => X.from(xb, { copy: true })),
  };

  // 3. Straight to the addon: a getter of a later argument detaches an array read before it.
  const raw = native();
  const xr = new Float32Array(64 * 3), mean = new Float64Array(3), m2 = new Float64Array(3);
  const args = { x: xr, dtype: 'float32', shape: [64, 3], layout: 'nchw', over: 'channel', groups: 1, mean };
  Object.defineProperty(args, 'm2', { get() { structuredClone(xr.buffer, { transfer: [xr.buffer] }); return m2; } });
  report.getterDetach = codeOf(() => raw.moments(args));

  // 4. SharedArrayBuffer memory: refused with a code where it would be shared; copied on request.
  const sab = new Float32Array(new SharedArrayBuffer(64 * 3 * 4));
  report.shared = {
    from: codeOf(() => X.from({ data: sab, shape: [64, 3] })),
    copy: codeOf(() => X.momentsSync(X.from({ data: sab, shape: [64, 3] }, { copy: true }))),
    raw: codeOf(() => raw.moments({ x: sab, dtype: 'float32', shape: [64, 3], layout: 'nchw', over: 'channel', groups: 1, mean, m2 })),
  };
  console.log(JSON.stringify(report));
}
main().catch((e) => { console.error(e); process.exit(1); });
