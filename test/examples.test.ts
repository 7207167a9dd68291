// Every example runs here, so none of them can rot.
import * as fs from 'fs';
import * as path from 'path';
import { afterEach, describe, expect, it, vi } from 'vitest';

const dir = path.join(__dirname, '..', 'examples');
// examples/*.ts and examples/<name>/index.ts, each exporting main()
const examples = fs
  .readdirSync(dir, { withFileTypes: true })
  .map((e) => (e.isDirectory() ? `${e.name}/index.ts` : e.name))
  .filter((f) => f.endsWith('.ts') && f !== 'demo.ts' && fs.existsSync(path.join(dir, f)))
  .sort();

describe('examples', () => {
  afterEach(() => vi.restoreAllMocks());
  it('there is at least one example per implemented family', () => {
    expect(examples).toEqual(expect.arrayContaining(['bnstats.ts', 'interop-onnx.ts', 'interop-tfjs.ts', 'server/index.ts']));
  });
  for (const file of examples) {
    it(`examples/${file} runs and prints its results`, async () => {
      const lines: string[] = [];
      vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
      const mod = (await import(path.join(dir, file))) as { main(): Promise<void> };
      await mod.main();
      expect(lines.length).toBeGreaterThan(0);
      expect(lines.join('\n')).not.toMatch(/NaN/);
    });
  }
});
