// float16 / bfloat16 <-> float32 conversions for tensors stored as uint16 bits (round to nearest even).

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function float16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

export function numberToFloat16Bits(v: number): number {
  f32[0] = v;
  const u = u32[0];
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00;
  if (a >= 0x477ff000) return sign | 0x7c00;
  if (a < 0x38800000) {
    // subnormal half: round |v| / 2^-24 to the nearest integer, ties to even
    f32[0] = Math.abs(f32[0]) * 16777216;
    const s = f32[0];
    let r = Math.floor(s);
    const frac = s - r;
    if (frac > 0.5 || (frac === 0.5 && r & 1)) r++;
    return sign | r;
  }
  const rounded = (a + 0xfff + ((a >>> 13) & 1)) >>> 0;
  return sign | ((rounded - (112 << 23)) >>> 13);
}

export function bfloat16BitsToNumber(h: number): number {
  u32[0] = (h << 16) >>> 0;
  return f32[0];
}

export function numberToBfloat16Bits(v: number): number {
  f32[0] = v;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
