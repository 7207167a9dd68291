// A small HTTP server (node:http) that runs xnorm ops on request bodies without blocking its event
// loop. `sync: true` uses the Sync ops instead: the blocking baseline of `npm run bench -- server`.
//
//   POST /moments?shape=8,64,32,32&layout=nchw   body: float32 little-endian values
//        -> { count, mean, var }
//   GET  /health -> ok
//   GET  /loop-delay[?reset=1] -> this server's event-loop delay percentiles (ms) since the last reset
//
// Run it standalone: node .run/examples/server/index.js --port 8080 [--sync]
import * as http from 'http';
import { AddressInfo } from 'net';
import { monitorEventLoopDelay } from 'perf_hooks';
import { XnormError, from, moments, momentsSync, variance } from '../../lib';
import type { Layout } from '../../lib';

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
