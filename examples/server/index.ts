// A small HTTP server (node:http) that runs xnorm ops on request bodies without blocking its event
// loop. `sync: true` uses the Sync ops instead: the blocking baseline of `npm run bench -- server`.
//
//   POST /moments?shape=8,64,32,32&layout=nchw   body: float32 little-endian values
//        -> { count, mean, var }
//   POST /convbn?shape=N,C,H,W    body: float32 NCHW -> float32 NCHW, a 3x3 conv + BN + ReLU layer (Tune mode)
//   POST /binary?shape=N,C,H,W    body: float32 NCHW -> float32 NHWC, packBits then a 3x3 binary conv
//        (both answer application/octet-stream with the output shape in the x-shape header)
//   GET  /health -> ok
//   GET  /loop-delay[?reset=1] -> this server's event-loop delay percentiles (ms) since the last reset
//
// Run it standalone: node .run/examples/server/index.js --port 8080 [--sync]
import * as http from 'http';
import { AddressInfo } from 'net';
import { monitorEventLoopDelay } from 'perf_hooks';
import {
  BinaryWeights,
  ConvBnParams,
  XnormError,
  binaryConv2d,
  binaryConv2dSync,
  convBn,
  convBnSync,
  from,
  moments,
  momentsSync,
  packBits,
  packBitsSync,
  packWeightsSync,
  tensor,
  variance,
} from '../../lib';
import type { Layout, Tensor } from '../../lib';

const LAYER_OUT = 16; // output channels of the example layers

/** Deterministic pseudo-random values, so a client can rebuild the server's layers. */
function seeded(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 2 ** 32 - 0.5;
  });
}

/** The layers the server applies to a C-channel input: a conv + BN layer and a binary conv layer. */
export function exampleLayers(c: number): { convBn: ConvBnParams; binary: BinaryWeights; scale: Tensor } {
  const k = LAYER_OUT;
  return {
    convBn: {
      weight: tensor(seeded(k * c * 9, c), [k, c, 3, 3]),
      bias: tensor(seeded(k, c + 1), [k]),
      bn: {
        mean: tensor(seeded(k, c + 2), [k]),
        var: tensor(seeded(k, c + 3).map((v) => v + 1), [k]),
        gamma: tensor(seeded(k, c + 4).map((v) => v + 1), [k]),
        beta: tensor(seeded(k, c + 5), [k]),
      },
    },
    binary: packWeightsSync(tensor(seeded(k * c * 9, c + 6), [k, c, 3, 3])),
    scale: tensor(seeded(k, c + 7).map((v) => v / (c * 9)), [k]),
  };
}

export interface ServerHandle {
  url: string;
  close(): Promise<void>;
}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new XnormError('ERR_XNORM_ARGUMENT', `request body larger than ${limit} bytes`));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function floats(body: Buffer): Float32Array {
  if (body.length % 4 !== 0) throw new XnormError('ERR_XNORM_ARGUMENT', `body: expected float32 values, received ${body.length} bytes`);
  // copy into an aligned array (the Buffer may sit at any offset of a pooled ArrayBuffer)
  return new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.length));
}

export function startServer(opts: { port?: number; host?: string; sync?: boolean } = {}): Promise<ServerHandle> {
  const sync = opts.sync ?? false;
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const layers = new Map<number, ReturnType<typeof exampleLayers>>();
  const layersFor = (c: number) => {
    if (!Number.isInteger(c) || c < 1 || c > 4096)
      throw new XnormError('ERR_XNORM_SHAPE', `shape: expected 1..4096 channels, received ${c}`);
    if (!layers.has(c)) layers.set(c, exampleLayers(c));
    return layers.get(c)!;
  };
  const sendTensor = (res: http.ServerResponse, t: Tensor) => {
    const data = t.dataSync();
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('x-shape', t.shape.join(','));
    res.end(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  };
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    try {
      if (req.method === 'GET' && url.pathname === '/health') {
        res.end('ok');
        return;
      }
      if (req.method === 'GET' && url.pathname === '/loop-delay') {
        const ms = (ns: number) => ns / 1e6;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ p50: ms(loop.percentile(50)), p99: ms(loop.percentile(99)), max: ms(loop.max) }));
        if (url.searchParams.get('reset')) loop.reset();
        return;
      }
      if (req.method === 'POST' && url.pathname === '/moments') {
        const shape = (url.searchParams.get('shape') ?? '').split(',').map(Number);
        const layout = (url.searchParams.get('layout') ?? 'nchw') as Layout;
        const repeat = Math.min(1000, Math.max(1, Number(url.searchParams.get('repeat') ?? 1)));
        const x = from({ data: floats(await readBody(req, 1 << 28)), shape }); // shares the array: no copy
        let m = sync ? momentsSync(x, { layout }) : await moments(x, { layout });
        for (let i = 1; i < repeat; i++) m = sync ? momentsSync(x, { layout }) : await moments(x, { layout });
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ count: m.count, mean: Array.from(m.mean.dataSync()), var: Array.from(variance(m).dataSync()) }));
        return;
      }
      if (req.method === 'POST' && (url.pathname === '/convbn' || url.pathname === '/binary')) {
        const shape = (url.searchParams.get('shape') ?? '').split(',').map(Number);
        const x = from({ data: floats(await readBody(req, 1 << 28)), shape });
        const layer = layersFor(shape[1]);
        if (url.pathname === '/convbn') {
          const opts = { padding: 1, activation: 'relu' as const };
          sendTensor(res, (sync ? convBnSync(x, layer.convBn, opts) : await convBn(x, layer.convBn, opts)).y);
        } else {
          const bits = sync ? packBitsSync(x) : await packBits(x);
          const opts = { padding: 1, scale: layer.scale };
          sendTensor(res, sync ? binaryConv2dSync(bits, layer.binary, opts) : await binaryConv2d(bits, layer.binary, opts));
        }
        return;
      }
      res.statusCode = 404;
      res.end('not found');
    } catch (e) {
      res.statusCode = e instanceof XnormError ? 400 : 500;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ error: (e as Error).message, code: (e as XnormError).code }));
    }
  });
  return new Promise((resolve) => {
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      const { address, port } = server.address() as AddressInfo;
      resolve({
        url: `http://${address}:${port}`,
        close: () =>
          new Promise<void>((r) => {
            loop.disable();
            server.close(() => r());
          }),
      });
    });
  });
}

/** Starts the server on a free port, sends one request of each kind, prints the answers, stops. */
export async function main(): Promise<void> {
  const s = await startServer();
  const x = new Float32Array(2 * 3 * 4 * 4).map((_, i) => (i % 7) - 3);
  const t0 = performance.now();
  const r = await fetch(`${s.url}/moments?shape=2,3,4,4`, { method: 'POST', body: Buffer.from(x.buffer) });
  console.log(`POST /moments -> ${r.status} ${await r.text()} (${(performance.now() - t0).toFixed(1)} ms)`);
  for (const op of ['convbn', 'binary']) {
    const t1 = performance.now();
    const y = await fetch(`${s.url}/${op}?shape=2,3,4,4`, { method: 'POST', body: Buffer.from(x.buffer) });
    const out = new Float32Array(await y.arrayBuffer());
    console.log(`POST /${op} -> ${y.status}, shape [${y.headers.get('x-shape')}], first values ${Array.from(out.slice(0, 3), (v) => v.toFixed(3)).join(', ')} (${(performance.now() - t1).toFixed(1)} ms)`);
  }
  const bad = await fetch(`${s.url}/moments?shape=2,3`, { method: 'POST', body: Buffer.from(x.buffer) });
  console.log(`POST /moments with a wrong shape -> ${bad.status} ${await bad.text()}`);
  console.log(`GET /health -> ${await (await fetch(`${s.url}/health`)).text()}`);
  await s.close();
}

if (require.main === module) {
  const arg = (name: string) => process.argv.indexOf(name);
  const port = arg('--port') > 0 ? Number(process.argv[arg('--port') + 1]) : 8080;
  void startServer({ port, sync: arg('--sync') > 0 }).then((s) => console.log(`listening on ${s.url}${arg('--sync') > 0 ? ' (Sync ops)' : ''}`));
}
