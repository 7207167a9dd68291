// A plugin whose device probe crashes (a broken driver does this) must not take the process down: the
// probe runs in a child process first, and CUDA stays off here with the reason. This file runs in its
// own process (vitest pool 'forks'), so the crashing plugin is only ever seen here.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { XnormError, cudaStatusSync, momentsSync, tensor, zeros } from '../lib';

const cc = ['/usr/bin/cc', '/usr/bin/gcc', '/usr/bin/clang'].find((f) => fs.existsSync(f));
let plugin: string | undefined;
if (cc) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xnorm-crash-'));
  const src = path.join(dir, 'crash.c');
  plugin = path.join(dir, 'libxnorm_cuda.so');
  fs.writeFileSync(
    src,
    `#include "native/include/xnorm_cuda.h"
static int32_t crash(int32_t* count, xnorm_cuda_status* st) { (void)count; (void)st; *(volatile int*)0 = 1; return 0; }
static xnorm_cuda_api api;
uint32_t xnorm_cuda_abi_version(void) { return XNORM_CUDA_ABI_VERSION; }
const xnorm_cuda_api* xnorm_cuda_get_api(void) {
  api.abi_version = XNORM_CUDA_ABI_VERSION; api.struct_size = sizeof api; api.device_count = crash; return &api;
}
`,
  );
  const r = spawnSync(cc, ['-shared', '-fPIC', '-I', path.join(__dirname, '..'), '-o', plugin, src], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the crashing plugin failed: ${r.stderr}`);
  process.env.XNORM_CUDA_PLUGIN = plugin;  // read when the plugin is first probed, below
  delete process.env.XNORM_CUDA_PROBE;
} else {
  console.log('[cuda-probe-crash.test] skipped: no C compiler at /usr/bin/cc, gcc or clang');
}

describe.skipIf(!plugin)('a plugin that crashes while probing', () => {
  it('is reported, not fatal; CUDA stays off and CPU ops keep working', () => {
    const c = cudaStatusSync();
    expect(c.available).toBe(false);
    expect(c.reason).toMatch(/crashed in a child process \(it was killed by SIGSEGV/);
    try {
      zeros([2], { device: 'cuda' });
      throw new Error('expected ERR_XNORM_CUDA_UNAVAILABLE');
    } catch (e) {
      expect(e).toBeInstanceOf(XnormError);
      expect((e as XnormError).code).toBe('ERR_XNORM_CUDA_UNAVAILABLE');
    }
    expect(Array.from(momentsSync(tensor([1, 2, 3, 4], [2, 2])).mean.dataSync())).toEqual([2, 3]);
  });
});
