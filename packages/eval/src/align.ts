import { PfcError, assertArg } from '@pfc/core';
import type { RgbImage } from './image';

/** The ArcFace template as the spec writes it: the classic 96×112 template shifted by +8 in x, in decimal. */
export const ARCFACE_TEMPLATE_DECIMAL: readonly (readonly [number, number])[] = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];

/**
 * The ArcFace 112×112 five-point template (x, y): left eye, right eye, nose tip, left and right mouth corner
 * ("left" = smaller x in the image), with the values the reference computes with: its 96×112 template is a float32
 * array shifted by +8.0 in float32, so each coordinate is float32-rounded (38.2946 is 38.29460144…). Aligning with the
 * decimal values instead moves the matrix by ~1e-7 relative, enough to change OpenCV's 1/32-pixel sampling positions
 * and hence some crop bytes.
 */
export const ARCFACE_TEMPLATE: readonly (readonly [number, number])[] = ARCFACE_TEMPLATE_DECIMAL.map(
  ([x, y]) => [Math.fround(Math.fround(x - 8) + 8), Math.fround(y)] as const,
);

/** A 2×3 affine matrix `[a, b, c, d, e, f]` mapping (x, y) to (a·x + b·y + c, d·x + e·y + f). */
export type Affine = Float64Array;

/**
 * Least-squares 2-D similarity (rotation, uniform scale, translation; never a reflection) mapping `src` onto
 * `dst`: Umeyama's method as skimage's `SimilarityTransform.estimate`. In two dimensions Umeyama's SVD solution
 * reduces to a closed form, used here: with centred points s, d, `A = Σ dᵀs / n`, the rotation is the angle of
 * (a11 + a22, a21 − a12) in every case (det A < 0 flips the sign of both the smaller singular value and the
 * corresponding column of U, which cancel), and the scale is `(σ1 + σ2·sign det A) / var(s) = (a11 + a22, a21 − a12)·(cos, sin) / var(s)`.
 * Hence `M = [[p, −q, tx], [q, p, ty]]` with `p = Σ(sx·dx + sy·dy) / Σ(sx² + sy²)`, `q = Σ(sx·dy − sy·dx) / Σ(sx² + sy²)`.
 * @param src [n][2] points (detected landmarks)
 * @param dst [n][2] points (template), same n ≥ 2
 * @returns the 2×3 matrix as a Float64Array(6)
 */
export function estimateSimilarity(src: ArrayLike<ArrayLike<number>>, dst: ArrayLike<ArrayLike<number>> = ARCFACE_TEMPLATE): Affine {
  const n = src.length;
  assertArg(n >= 2 && dst.length === n, 'estimateSimilarity', 'src.length', n, `≥ 2 and equal to dst.length ${dst.length}`);
  let msx = 0;
  let msy = 0;
  let mdx = 0;
  let mdy = 0;
  for (let i = 0; i < n; i++) {
    msx += src[i]![0]!;
    msy += src[i]![1]!;
    mdx += dst[i]![0]!;
    mdy += dst[i]![1]!;
  }
  msx /= n;
  msy /= n;
  mdx /= n;
  mdy /= n;
  let num1 = 0;
  let num2 = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[i]![0]! - msx;
    const sy = src[i]![1]! - msy;
    const dx = dst[i]![0]! - mdx;
    const dy = dst[i]![1]! - mdy;
    num1 += sx * dx + sy * dy;
    num2 += sx * dy - sy * dx;
    den += sx * sx + sy * sy;
  }
  if (!(den > 0) || !Number.isFinite(den)) {
    throw new PfcError('E_ALIGN_DEGENERATE', `estimateSimilarity: source points are all equal or not finite (variance ${den}); cannot fit a similarity`, { details: { src } });
  }
  const p = num1 / den;
  const q = num2 / den;
  return Float64Array.from([p, -q, mdx - (p * msx - q * msy), q, p, mdy - (q * msx + p * msy)]);
}

/**
 * Reduces 68 iBUG landmarks to the five alignment points as the reference does: mean of eye corners 36/39 and
 * 42/45, nose tip 30, mouth corners 48 and 54.
 * @param pts [68][2]
 */
export function landmarks68To5(pts: ArrayLike<ArrayLike<number>>): [number, number][] {
  assertArg(pts.length === 68, 'landmarks68To5', 'pts.length', pts.length, '68');
  const p = (i: number): [number, number] => [pts[i]![0]!, pts[i]![1]!];
  const mid = (a: number, b: number): [number, number] => [(p(a)[0] + p(b)[0]) / 2, (p(a)[1] + p(b)[1]) / 2];
  return [mid(36, 39), mid(42, 45), p(30), p(48), p(54)];
}

/** Inverse of a 2×3 affine (OpenCV `invertAffineTransform`; a singular matrix gives zeros as OpenCV does). */
export function invertAffine(m: ArrayLike<number>): Affine {
  const [a, b, c, d, e, f] = [m[0]!, m[1]!, m[2]!, m[3]!, m[4]!, m[5]!];
  let D = a * e - b * d;
  D = D !== 0 ? 1 / D : 0;
  const A11 = e * D;
  const A22 = a * D;
  const A12 = -b * D;
  const A21 = -d * D;
  return Float64Array.from([A11, A12, -A11 * c - A12 * f, A21, A22, -A21 * c - A22 * f]);
}

/** `cvRound`: round half to even, as x86 `cvtsd2si` in the default rounding mode. */
function rint(v: number): number {
  let r = Math.round(v);
  if (r - v === 0.5 && r % 2 !== 0) r -= 1;
  return r;
}

/** Options of {@link warpAffine}. */
export interface WarpOptions {
  /**
   * `'opencv'` (default): OpenCV ≤ 4.10's fixed-point INTER_LINEAR (source coordinates in 1/32 pixel, 15-bit
   * weights, round-half-up of the weighted sum), the arithmetic of the reference's `cv2.warpAffine`.
   * `'float'`: exact bilinear interpolation at the exact source coordinates, rounded to nearest.
   */
  mode?: 'opencv' | 'float';
}

/**
 * `cv2.warpAffine(img, M, (width, height), borderValue=0)` with bilinear interpolation: output pixel (x, y) samples
 * the input at `M⁻¹·(x, y)`; pixels outside the input count as 0.
 * @param img RGB HWC uint8 input
 * @param m forward 2×3 matrix (input → output), e.g. from {@link estimateSimilarity}
 * @param width output width (112 for ArcFace)
 * @param height output height
 */
export function warpAffine(img: RgbImage, m: ArrayLike<number>, width = 112, height = 112, options: WarpOptions = {}): RgbImage {
  assertArg(img.data.length === img.width * img.height * 3, 'warpAffine', 'img.data.length', img.data.length, `width × height × 3 = ${img.width * img.height * 3}`);
  const out = new Uint8Array(width * height * 3);
  if ((options.mode ?? 'opencv') === 'opencv') {
    const iM = invertAffine(m);
    const px = pixelReader(img);
    const adelta = new Int32Array(width);
    const bdelta = new Int32Array(width);
    for (let x = 0; x < width; x++) {
      adelta[x] = rint(iM[0]! * x * 1024);
      bdelta[x] = rint(iM[3]! * x * 1024);
    }
    for (let y = 0; y < height; y++) {
      const X0 = rint((iM[1]! * y + iM[2]!) * 1024) + 16;
      const Y0 = rint((iM[4]! * y + iM[5]!) * 1024) + 16;
      for (let x = 0; x < width; x++) {
        const X = (X0 + adelta[x]!) >> 5;
        const Y = (Y0 + bdelta[x]!) >> 5;
        const sx = X >> 5;
        const sy = Y >> 5;
        const fx = X & 31;
        const fy = Y & 31;
        const w0 = (32 - fy) * (32 - fx) * 32;
        const w1 = (32 - fy) * fx * 32;
        const w2 = fy * (32 - fx) * 32;
        const w3 = fy * fx * 32;
        for (let c = 0; c < 3; c++) {
          const v = w0 * px(sx, sy, c) + w1 * px(sx + 1, sy, c) + w2 * px(sx, sy + 1, c) + w3 * px(sx + 1, sy + 1, c);
          out[(y * width + x) * 3 + c] = Math.min(255, Math.max(0, (v + 16384) >> 15));
        }
      }
    }
  } else {
    const exact = warpAffineBilinear(img, m, width, height);
    for (let i = 0; i < exact.length; i++) out[i] = Math.min(255, Math.max(0, Math.round(exact[i]!)));
  }
  return { width, height, data: out };
}

/** Channel `c` of pixel (x, y) of `img`, 0 outside it (OpenCV's `borderValue=0`). */
function pixelReader({ width: W, height: H, data: S }: RgbImage): (x: number, y: number, c: number) => number {
  return (x, y, c) => (x >= 0 && y >= 0 && x < W && y < H ? S[(y * W + x) * 3 + c]! : 0);
}

/**
 * The `'float'` mode of {@link warpAffine} before rounding: bilinear interpolation at the exact source coordinates
 * `M⁻¹·(x, y)` (float64 throughout), pixels outside the input counting as 0. Internal (not re-exported by the
 * package): the tests compare it with an independent float64 reference, which the rounded uint8 output cannot show.
 * @param img RGB HWC uint8 input
 * @param m forward 2×3 matrix (input → output)
 * @returns [height, width, 3] float64 values in 0…255
 */
export function warpAffineBilinear(img: RgbImage, m: ArrayLike<number>, width: number, height: number): Float64Array {
  assertArg(img.data.length === img.width * img.height * 3, 'warpAffineBilinear', 'img.data.length', img.data.length, `width × height × 3 = ${img.width * img.height * 3}`);
  const iM = invertAffine(m);
  const px = pixelReader(img);
  const out = new Float64Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const u = iM[0]! * x + iM[1]! * y + iM[2]!;
      const v = iM[3]! * x + iM[4]! * y + iM[5]!;
      const x0 = Math.floor(u);
      const y0 = Math.floor(v);
      const ax = u - x0;
      const ay = v - y0;
      for (let c = 0; c < 3; c++) {
        out[(y * width + x) * 3 + c] = (1 - ay) * ((1 - ax) * px(x0, y0, c) + ax * px(x0 + 1, y0, c)) + ay * ((1 - ax) * px(x0, y0 + 1, c) + ax * px(x0 + 1, y0 + 1, c));
      }
    }
  }
  return out;
}

/**
 * Aligns a face to the ArcFace 112×112 crop: similarity from the five landmarks to {@link ARCFACE_TEMPLATE}, then
 * {@link warpAffine}.
 * @param img RGB HWC uint8
 * @param landmarks [5][2] in image pixel coordinates
 */
export function alignFace(img: RgbImage, landmarks: ArrayLike<ArrayLike<number>>, options: WarpOptions & { size?: number } = {}): RgbImage {
  assertArg(landmarks.length === 5, 'alignFace', 'landmarks.length', landmarks.length, '5 (use landmarks68To5 for 68-point input)');
  const size = options.size ?? 112;
  const scale = size / 112;
  const dst = ARCFACE_TEMPLATE.map(([x, y]) => [x * scale, y * scale]);
  return warpAffine(img, estimateSimilarity(landmarks, dst), size, size, options);
}
