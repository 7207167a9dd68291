// The example HTTP server, started on 127.0.0.1: results over HTTP match the library's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryConv2dSync, convBnSync, momentsSync, packBitsSync, tensor, variance } from '../lib';
import { ServerHandle, exampleLayers, startServer } from '../examples/server';

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

  it('runs convBn and binaryConv2d on request bodies like the library does', async () => {
    const shape = [2, 5, 6, 7];
    const x = new Float32Array(2 * 5 * 6 * 7).map((_, i) => Math.sin(i * 0.37));
    const layers = exampleLayers(5);
    const expected = {
      convbn: convBnSync(tensor(x, shape), layers.convBn, { padding: 1, activation: 'relu' }).y,
      binary: binaryConv2dSync(packBitsSync(tensor(x, shape)), layers.binary, { padding: 1, scale: layers.scale }),
    };
    for (const op of ['convbn', 'binary'] as const) {
      const r = await fetch(`${s.url}/${op}?shape=${shape.join(',')}`, { method: 'POST', body: Buffer.from(x.buffer) });
      expect(r.status).toBe(200);
      expect(r.headers.get('x-shape')).toBe(expected[op].shape.join(','));
      expect(Array.from(new Float32Array(await r.arrayBuffer()))).toEqual(Array.from(expected[op].dataSync()));
    }
  });

  it('turns bad input into a 400 with the XnormError code', async () => {
    const r = await fetch(`${s.url}/moments?shape=2,2`, { method: 'POST', body: Buffer.from(new Float32Array(3).buffer) });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { code: string }).code).toBe('ERR_XNORM_SHAPE');
  });
});
