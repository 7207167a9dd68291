import { describe, expect, it } from 'vitest';
import { info, moments, tensor } from '../lib';

describe('smoke', () => {
  it('loads', async () => {
    expect(info().cpu.threads).toBeGreaterThan(0);
    const m = await moments(tensor([1, 2, 3, 4], [2, 2]), { layout: 'nhwc' });
    expect(Array.from(m.mean.dataSync())).toEqual([2, 3]);
  });
});
