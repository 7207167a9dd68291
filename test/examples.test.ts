// Every example runs here, so none of them can rot.
import * as fs from 'fs';
import * as path from 'path';
import { afterEach, describe, expect, it, vi } from 'vitest';

const dir = path.join(__dirname, '..', 'examples');
const examples = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && f !== 'demo.ts')
  .sort();

describe('examples', () => {
  afterEach(() => vi.restoreAllMocks());
  it('there is at least one example per implemented family', () => {
    expect(examples).toContain('bnstats.ts');
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
