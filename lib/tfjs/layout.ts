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

/** The inverse of hwioToOihw (filter gradients back to tfjs's layout), into `out`. */
export function oihwToHwio(w: Float32Array, kh: number, kw: number, cinG: number, cout: number, out: Float32Array): void {
  const taps = kh * kw;
  for (let t = 0; t < taps; t++)
    for (let i = 0; i < cinG; i++) {
      const dst = (t * cinG + i) * cout;
      for (let o = 0; o < cout; o++) out[dst + o] = w[(o * cinG + i) * taps + t];
    }
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

/** x with `e` rows and columns of zeros added around each image, written into `out` (any contents). */
export function padSpatial(x: Float32Array, s: Spatial, e: Extra, out: Float32Array): void {
  const H = s.h + e.top + e.bottom, W = s.w + e.left + e.right;
  // channels-last: a pixel is c values, a row w·c; channels-first: a pixel is 1 value, each plane an image
  const [px, images] = s.channelsLast ? [s.c, s.n] : [1, s.n * s.c];
  const row = s.w * px, outRow = W * px;
  for (let n = 0; n < images; n++) {
    const base = n * H * outRow;
    out.fill(0, base, base + e.top * outRow);
    for (let y = 0; y < s.h; y++) {
      const at = base + (y + e.top) * outRow, src = (n * s.h + y) * row;
      out.fill(0, at, at + e.left * px);
      out.set(x.subarray(src, src + row), at + e.left * px);
      out.fill(0, at + e.left * px + row, at + outRow);
    }
    out.fill(0, base + (e.top + s.h) * outRow, base + H * outRow);
  }
}

/** The inverse of padSpatial: the interior of a padded gradient (s is the unpadded geometry), into `out`. */
export function cropSpatial(x: Float32Array, s: Spatial, e: Extra, out: Float32Array): void {
  const W = s.w + e.left + e.right, H = s.h + e.top + e.bottom;
  const [px, images] = s.channelsLast ? [s.c, s.n] : [1, s.n * s.c];
  const row = s.w * px, inRow = W * px;
  for (let n = 0; n < images; n++)
    for (let y = 0; y < s.h; y++) {
      const src = (n * H + y + e.top) * inRow + e.left * px;
      out.set(x.subarray(src, src + row), (n * s.h + y) * row);
    }
}
