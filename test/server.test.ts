// The example HTTP server, started on 127.0.0.1: results over HTTP match the library's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { momentsSync, tensor, variance } from '../lib';
import { ServerHandle, startServer } from '../examples/server';

describe('examples/server', () => {
  let s: ServerHandle;
  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(async () => s.close());

  it('answers /health', async () => {
    expect(await (await fetch(`${s.url}/health`)).text()).toBe('ok');
  });

  it('computes moments of a request body like the library does', async () => {
    const x = new Float32Array(4 * 5 * 6 * 7).map((_, i) => Math.cos(i) * 3 + 1);
    const r = await fetch(`${s.url}/moments?shape=4,5,6,7&layout=nhwc`, { method: 'POST', body: Buffer.from(x.buffer) });
    expect(r.status).toBe(200);
    const got = (await r.json()) as { count: number; mean: number[]; var: number[] };
    const m = momentsSync(tensor(x, [4, 5, 6, 7]), { layout: 'nhwc' });
    expect(got.count).toBe(m.count);
    expect(got.mean).toEqual(Array.from(m.mean.dataSync()));
    expect(got.var).toEqual(Array.from(variance(m).dataSync()));
  });

  it('turns bad input into a 400 with the XnormError code', async () => {
    const r = await fetch(`${s.url}/moments?shape=2,2`, { method: 'POST', body: Buffer.from(new Float32Array(3).buffer) });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { code: string }).code).toBe('ERR_XNORM_SHAPE');
  });
});
