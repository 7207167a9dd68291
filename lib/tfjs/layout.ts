// Moving tfjs data into xnorm's layouts: filters (HWIO → OIHW and back) and explicit zero padding for
// the convs whose padding xnorm's symmetric `padding` cannot express (tfjs 'same' with stride 2, say).

/**
 * tfjs filter [kh, kw, cinG, cout] (HWIO; a depthwise [kh, kw, C, mult] is the same with cinG = 1 and
 * cout = C·mult) → xnorm [cout, cinG, kh, kw].
 */
export function hwioToOihw(f: Float32Array, kh: number, kw: number, cinG: number, cout: number): Float32Array {
  const out = new Float32Array(f.length);
  const taps = kh * kw;
  for (let t = 0; t < taps; t++)
    for (let i = 0; i < cinG; i++) {
      const src = (t * cinG + i) * cout;
      for (let o = 0; o < cout; o++) out[(o * cinG + i) * taps + t] = f[src + o];
    }
  return out;
}

/** The inverse of hwioToOihw (filter gradients back to tfjs's layout). */
export function oihwToHwio(w: Float32Array, kh: number, kw: number, cinG: number, cout: number): Float32Array {
  const out = new Float32Array(w.length);
  const taps = kh * kw;
  for (let t = 0; t < taps; t++)
    for (let i = 0; i < cinG; i++) {
      const dst = (t * cinG + i) * cout;
      for (let o = 0; o < cout; o++) out[dst + o] = w[(o * cinG + i) * taps + t];
    }
  return out;
}

/** A [rows, cols] matrix transposed. */
export function transpose2d(a: Float32Array, rows: number, cols: number, offset = 0): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[offset + r * cols + c];
  return out;
}

/** Spatial geometry of a 4-D activation: [n, h, w, c] channels-last or [n, c, h, w] channels-first. */
export interface Spatial {
  channelsLast: boolean;
  n: number;
  c: number;
  h: number;
  w: number;
}

export function shape4(s: Spatial): number[] {
  return s.channelsLast ? [s.n, s.h, s.w, s.c] : [s.n, s.c, s.h, s.w];
}

/** Padding xnorm cannot take as a symmetric `padding`, added as zeros around x (top, bottom, left, right). */
export interface Extra {
  top: number;
  bottom: number;
  left: number;
  right: number;
}

export const hasExtra = (e: Extra) => e.top + e.bottom + e.left + e.right > 0;

/** x with `e` rows and columns of zeros added around each image. */
export function padSpatial(x: Float32Array, s: Spatial, e: Extra): Float32Array {
  const H = s.h + e.top + e.bottom, W = s.w + e.left + e.right;
  const out = new Float32Array(s.n * s.c * H * W);
  if (s.channelsLast) {
    const row = s.w * s.c;
    for (let n = 0; n < s.n; n++)
      for (let y = 0; y < s.h; y++) {
        const src = (n * s.h + y) * row;
        out.set(x.subarray(src, src + row), ((n * H + y + e.top) * W + e.left) * s.c);
      }
  } else {
    for (let p = 0; p < s.n * s.c; p++)
      for (let y = 0; y < s.h; y++) {
        const src = (p * s.h + y) * s.w;
        out.set(x.subarray(src, src + s.w), (p * H + y + e.top) * W + e.left);
      }
  }
  return out;
}

/** The inverse of padSpatial: the interior of a padded gradient (s is the unpadded geometry). */
export function cropSpatial(x: Float32Array, s: Spatial, e: Extra): Float32Array {
  const H = s.h + e.top + e.bottom, W = s.w + e.left + e.right;
  const out = new Float32Array(s.n * s.c * s.h * s.w);
  if (s.channelsLast) {
    const row = s.w * s.c;
    for (let n = 0; n < s.n; n++)
      for (let y = 0; y < s.h; y++) {
        const src = ((n * H + y + e.top) * W + e.left) * s.c;
        out.set(x.subarray(src, src + row), (n * s.h + y) * row);
      }
  } else {
    for (let p = 0; p < s.n * s.c; p++)
      for (let y = 0; y < s.h; y++) {
        const src = (p * H + y + e.top) * W + e.left;
        out.set(x.subarray(src, src + s.w), (p * s.h + y) * s.w);
      }
  }
  return out;
}
