import { Rng } from '@pfc/core';
import { ARCFACE_TEMPLATE, alignFace, estimateSimilarity, invertAffine, landmarks68To5, warpAffine, warpAffineBilinear } from './align';
import type { RgbImage } from './image';

/** A reference least-squares similarity by the normal equations of [p, q, tx, ty] (4×4 solve, no closed form). */
function normalEquationsFit(src: number[][], dst: number[][]): number[] {
  // rows: x' = p x - q y + tx ; y' = q x + p y + ty
  const AtA = Array.from({ length: 4 }, () => new Array<number>(4).fill(0));
  const Atb = new Array<number>(4).fill(0);
  src.forEach(([x, y], i) => {
    const rows: [number[], number][] = [
      [[x!, -y!, 1, 0], dst[i]![0]!],
      [[y!, x!, 0, 1], dst[i]![1]!],
    ];
    for (const [r, b] of rows) for (let a = 0; a < 4; a++) {
      Atb[a]! += r[a]! * b;
      for (let c = 0; c < 4; c++) AtA[a]![c]! += r[a]! * r[c]!;
    }
  });
  // Gaussian elimination with partial pivoting
  const M = AtA.map((r, i) => [...r, Atb[i]!]);
  for (let c = 0; c < 4; c++) {
    let piv = c;
    for (let r = c + 1; r < 4; r++) if (Math.abs(M[r]![c]!) > Math.abs(M[piv]![c]!)) piv = r;
    [M[c], M[piv]] = [M[piv]!, M[c]!];
    for (let r = 0; r < 4; r++) {
      if (r === c) continue;
      const f = M[r]![c]! / M[c]![c]!;
      for (let k = c; k < 5; k++) M[r]![k]! -= f * M[c]![k]!;
    }
  }
  return M.map((r, i) => r[4]! / r[i]!);
}

describe('similarity alignment', () => {
  it('recovers a known similarity exactly from noise-free points', () => {
    const s = 1.7;
    const th = 0.3;
    const [tx, ty] = [-20.5, 13.25];
    const src = [[10, 20], [50, 22], [30, 40], [15, 60], [45, 62]];
    const dst = src.map(([x, y]) => [s * Math.cos(th) * x! - s * Math.sin(th) * y! + tx, s * Math.sin(th) * x! + s * Math.cos(th) * y! + ty]);
    const m = estimateSimilarity(src, dst);
    const expected = [s * Math.cos(th), -s * Math.sin(th), tx, s * Math.sin(th), s * Math.cos(th), ty];
    // float64 round-off of sums over 5 points: 1e-12 absolute
    m.forEach((v, i) => expect(Math.abs(v - expected[i]!)).toBeLessThan(1e-12));
  });

  it('equals the least-squares solution of the normal equations on noisy points (and never reflects)', () => {
    const rng = new Rng(3);
    for (let trial = 0; trial < 20; trial++) {
      const src = ARCFACE_TEMPLATE.map(([x, y]) => [x * 2.3 + 100 + rng.normal() * 4, y * 2.1 + 50 + rng.normal() * 4]);
      // every few trials mirror the source (det A < 0): Umeyama returns the best rotation, not a reflection
      if (trial % 4 === 0) src.forEach((p) => (p[0] = 400 - p[0]!));
      const dst = ARCFACE_TEMPLATE.map(([x, y]) => [x, y]);
      const m = estimateSimilarity(src, dst);
      const [p, q, tx, ty] = normalEquationsFit(src, dst);
      // conditioning of the 4×4 solve: 1e-9 absolute
      expect(Math.abs(m[0]! - p!)).toBeLessThan(1e-9);
      expect(Math.abs(m[3]! - q!)).toBeLessThan(1e-9);
      expect(Math.abs(m[2]! - tx!)).toBeLessThan(1e-9);
      expect(Math.abs(m[5]! - ty!)).toBeLessThan(1e-9);
      expect(m[0]).toBe(m[4]);
      expect(m[1]).toBe(-m[3]!);
    }
  });

  it('rejects degenerate input', () => {
    expect(() => estimateSimilarity([[1, 1], [1, 1]], [[0, 0], [1, 1]])).toThrow(/variance/);
    expect(() => estimateSimilarity([[1, 1]], [[0, 0]])).toThrow(/src.length/);
    expect(() => landmarks68To5([[0, 0]])).toThrow(/68/);
  });

  it('reduces 68 points to 5 as the reference', () => {
    const pts = Array.from({ length: 68 }, (_, i) => [i, 2 * i]);
    expect(landmarks68To5(pts)).toEqual([[37.5, 75], [43.5, 87], [30, 60], [48, 96], [54, 108]]);
  });

  it('inverts affine matrices', () => {
    const m = Float64Array.from([1.2, -0.3, 5, 0.3, 1.2, -7]);
    const inv = invertAffine(m);
    const [x, y] = [13, 29];
    const u = m[0]! * x + m[1]! * y + m[2]!;
    const v = m[3]! * x + m[4]! * y + m[5]!;
    expect(inv[0]! * u + inv[1]! * v + inv[2]!).toBeCloseTo(x, 12);
    expect(inv[3]! * u + inv[4]! * v + inv[5]!).toBeCloseTo(y, 12);
  });
});

function synthetic(w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      data[(y * w + x) * 3] = (x * 3 + y) & 255;
      data[(y * w + x) * 3 + 1] = Math.round(127.5 + 127.5 * Math.sin(x / 9) * Math.cos(y / 7));
      data[(y * w + x) * 3 + 2] = (x * y) % 251;
    }
  return { width: w, height: h, data };
}

/**
 * Direct bilinear sampling with zero padding, written independently of warpAffine (source coordinates by solving
 * m·(u, v, 1) = (x, y), weights multiplied out per corner), before rounding: [H, W, 3] float64.
 */
function directBilinear(img: RgbImage, m: ArrayLike<number>, W: number, H: number): Float64Array {
  const det = m[0]! * m[4]! - m[1]! * m[3]!;
  const out = new Float64Array(W * H * 3);
  const at = (x: number, y: number, c: number) => (x < 0 || y < 0 || x >= img.width || y >= img.height ? 0 : img.data[(y * img.width + x) * 3 + c]!);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const bx = x - m[2]!;
      const by = y - m[5]!;
      const u = (m[4]! * bx - m[1]! * by) / det;
      const v = (-m[3]! * bx + m[0]! * by) / det;
      const x0 = Math.floor(u);
      const y0 = Math.floor(v);
      const a = u - x0;
      const b = v - y0;
      for (let c = 0; c < 3; c++) {
        out[(y * W + x) * 3 + c] = at(x0, y0, c) * (1 - a) * (1 - b) + at(x0 + 1, y0, c) * a * (1 - b) + at(x0, y0 + 1, c) * (1 - a) * b + at(x0 + 1, y0 + 1, c) * a * b;
      }
    }
  return out;
}

/** `cvRound` / `saturate_cast<int>(double)`: round half to even (x86 `cvtsd2si`), written without Math.round. */
function cvRound(v: number): number {
  const f = Math.floor(v);
  const d = v - f; // exact for |v| < 2^52
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}

/**
 * OpenCV's `BilinearTab_i` (imgwarp.cpp `initInterTab2D(INTER_LINEAR, true)`, unchanged from 3.x to 4.x): for
 * α = fy·32 + fx the four 15-bit weights of (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1), computed in float32 as
 * `saturate_cast<short>((1 - fy/32)(1 - fx/32) · 32768)` etc., then corrected so that they sum to 32768.
 *
 * Only α = 0 needs the correction: its weight 1.0·32768 saturates to 32767. The correction loop looks for the largest
 * weight among rows/columns `ksize/2 … ksize/2 + 1` of the cell, which for ksize = 2 are the cell's last weight and
 * three entries past it (the next cells, still zero); so it adds the missing 1 to the (x0+1, y0+1) weight:
 * α = 0 is [32767, 0, 0, 1], not [32768, 0, 0, 0]. Emulated here as written (a flat table filled in order).
 */
function bilinearTabI(): Int16Array {
  const TAB = 32;
  const tab1 = new Float32Array(2 * TAB);
  const scale = Math.fround(1 / TAB);
  for (let i = 0; i < TAB; i++) {
    const x = Math.fround(i * scale);
    tab1[2 * i] = Math.fround(1 - x);
    tab1[2 * i + 1] = x;
  }
  const saturateShort = (v: number) => Math.max(-32768, Math.min(32767, v));
  const itab = new Int16Array(TAB * TAB * 4 + 4); // + 4: the correction loop of the last cell reads past the table
  for (let i = 0; i < TAB; i++)
    for (let j = 0; j < TAB; j++) {
      const cell = (i * TAB + j) * 4;
      let isum = 0;
      for (let k1 = 0; k1 < 2; k1++)
        for (let k2 = 0; k2 < 2; k2++) {
          const v = Math.fround(tab1[2 * i + k1]! * tab1[2 * j + k2]!);
          itab[cell + k1 * 2 + k2] = saturateShort(cvRound(Math.fround(v * 32768)));
          isum += itab[cell + k1 * 2 + k2]!;
        }
      if (isum !== 32768) {
        const diff = isum - 32768;
        const ksize2 = 1; // ksize / 2 for ksize = 2
        let [Mk1, Mk2, mk1, mk2] = [ksize2, ksize2, ksize2, ksize2];
        for (let k1 = ksize2; k1 < ksize2 + 2; k1++)
          for (let k2 = ksize2; k2 < ksize2 + 2; k2++) {
            if (itab[cell + k1 * 2 + k2]! < itab[cell + mk1 * 2 + mk2]!) [mk1, mk2] = [k1, k2];
            else if (itab[cell + k1 * 2 + k2]! > itab[cell + Mk1 * 2 + Mk2]!) [Mk1, Mk2] = [k1, k2];
          }
        if (diff < 0) itab[cell + Mk1 * 2 + Mk2] = itab[cell + Mk1 * 2 + Mk2]! - diff;
        else itab[cell + mk1 * 2 + mk2] = itab[cell + mk1 * 2 + mk2]! - diff;
      }
    }
  return itab;
}

/**
 * `cv2.warpAffine(src, M, (W, H), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, borderValue=0)` on CV_8UC3 as
 * OpenCV 3.x…4.10 computes it (imgwarp.cpp: `warpAffine` inverts M in place, `WarpAffineInvoker` +
 * `warpAffineBlockline` build 16-bit source coordinates and 5+5-bit table indices, `remapBilinear` with
 * `FixedPtCast<int, uchar, 15>` interpolates, inlier / border / outside branches as written there).
 * @returns the image and how many cvRound calls met an exact tie that half-even rounds down (where
 *   round-half-up would differ)
 */
function cvWarpAffineLinear8UC3(img: RgbImage, M0: ArrayLike<number>, W: number, H: number): { data: Uint8Array; evenTies: number } {
  const M = Array.from(M0);
  let D = M[0]! * M[4]! - M[1]! * M[3]!;
  D = D !== 0 ? 1 / D : 0;
  const A11 = M[4]! * D;
  const A22 = M[0]! * D;
  M[0] = A11;
  M[1]! *= -D;
  M[3]! *= -D;
  M[4] = A22;
  const b1 = -M[0] * M[2]! - M[1]! * M[5]!;
  const b2 = -M[3]! * M[2]! - M[4] * M[5]!;
  M[2] = b1;
  M[5] = b2;

  const INTER_BITS = 5;
  const TAB = 1 << INTER_BITS;
  const AB_BITS = Math.max(10, INTER_BITS);
  const AB_SCALE = 1 << AB_BITS;
  const roundDelta = AB_SCALE / TAB / 2;
  let evenTies = 0;
  const round = (v: number) => {
    if (v - Math.floor(v) === 0.5 && Math.floor(v) % 2 === 0) evenTies++;
    return cvRound(v);
  };
  const saturateShort = (v: number) => Math.max(-32768, Math.min(32767, v));
  const adelta = Array.from({ length: W }, (_, x) => round(M[0]! * x * AB_SCALE));
  const bdelta = Array.from({ length: W }, (_, x) => round(M[3]! * x * AB_SCALE));
  const wtab = bilinearTabI();
  const { width: sw, height: sh, data: S } = img;
  const width1 = Math.max(sw - 1, 0);
  const height1 = Math.max(sh - 1, 0);
  const cast = (v: number) => Math.max(0, Math.min(255, (v + (1 << 14)) >> 15));
  const border = (p: number, n: number) => (p >= 0 && p < n ? p : -1); // borderInterpolate, BORDER_CONSTANT
  const out = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    const X0 = round((M[1]! * y + M[2]!) * AB_SCALE) + roundDelta;
    const Y0 = round((M[4]! * y + M[5]!) * AB_SCALE) + roundDelta;
    for (let x = 0; x < W; x++) {
      const X = (X0 + adelta[x]!) >> (AB_BITS - INTER_BITS);
      const Y = (Y0 + bdelta[x]!) >> (AB_BITS - INTER_BITS);
      const sx = saturateShort(X >> INTER_BITS);
      const sy = saturateShort(Y >> INTER_BITS);
      const alpha = (Y & (TAB - 1)) * TAB + (X & (TAB - 1));
      const w = wtab.subarray(alpha * 4, alpha * 4 + 4);
      const d = (y * W + x) * 3;
      if (sx >>> 0 < width1 && sy >>> 0 < height1) {
        for (let k = 0; k < 3; k++) {
          const s = (sy * sw + sx) * 3 + k;
          out[d + k] = cast(S[s]! * w[0]! + S[s + 3]! * w[1]! + S[s + sw * 3]! * w[2]! + S[s + sw * 3 + 3]! * w[3]!);
        }
      } else if (sx >= sw || sx + 1 < 0 || sy >= sh || sy + 1 < 0) {
        out[d] = out[d + 1] = out[d + 2] = 0; // cval
      } else {
        const [sx0, sx1, sy0, sy1] = [border(sx, sw), border(sx + 1, sw), border(sy, sh), border(sy + 1, sh)];
        const v = (px: number, py: number, k: number) => (px >= 0 && py >= 0 ? S[(py * sw + px) * 3 + k]! : 0);
        for (let k = 0; k < 3; k++) out[d + k] = cast(v(sx0, sy0, k) * w[0]! + v(sx1, sy0, k) * w[1]! + v(sx0, sy1, k) * w[2]! + v(sx1, sy1, k) * w[3]!);
      }
    }
  }
  return { data: out, evenTies };
}

/**
 * Forward matrices whose inverse is `[[1 + a/2048, a/2048, c], [−a/2048, 1 − a/2048, f]]` (det 1, a odd, c and f
 * multiples of 1/1024), so that both inversions are exact and `M·x·1024` (odd x) and `(M·y + c)·1024` (odd a·y)
 * fall on exact ties: what tells cvRound's half-to-even from half-up.
 */
function dyadicWarps(rng: Rng, n: number): Float64Array[] {
  return Array.from({ length: n }, () => {
    const a = (2 * rng.int(40) + 1) / 2048;
    const c = rng.int(30 * 1024) / 1024;
    const f = rng.int(20 * 1024) / 1024;
    return invertAffine(Float64Array.from([1 + a, a, c, -a, 1 - a, f]));
  });
}

/** The test cases: [name, source, forward matrix, output width, height]. */
function warpCases(): [string, RgbImage, Float64Array, number, number][] {
  const img = synthetic(150, 130);
  const rot = (th: number, s: number, tx: number, ty: number) => Float64Array.from([s * Math.cos(th), -s * Math.sin(th), tx, s * Math.sin(th), s * Math.cos(th), ty]);
  return [
    ['similarity from landmarks', img, estimateSimilarity([[40, 50], [95, 48], [70, 75], [48, 100], [92, 99]]), 112, 112],
    // landmarks near the top-left corner: a third of the crop samples outside the image (border and outside branches)
    ['crop over the corner', img, estimateSimilarity([[8, 14], [52, 6], [30, 30], [12, 52], [54, 46]]), 112, 112],
    ['rotation, upscale, non-square output', img, rot(0.7, 1.9, 20, -60), 160, 90],
    ['rotation by -2.5 rad, downscale', img, rot(-2.5, 0.55, 90, 100), 96, 80],
    // a 7×5 source blown up 6× into a larger output: every side's partial border samples and far-outside pixels
    ['tiny source, all borders', synthetic(7, 5), rot(0.05, 6, 4.3, 3.1), 56, 44],
    ...dyadicWarps(new Rng(9), 6).map((m, i): [string, RgbImage, Float64Array, number, number] => [`dyadic ${i}`, img, m, 112, 112]),
  ];
}

describe('warpAffine', () => {
  const img = synthetic(150, 130);

  it("float mode before rounding equals a direct float64 bilinear reference, and its output is that value rounded half up", () => {
    for (const [name, src, m, W, H] of warpCases()) {
      const exact = warpAffineBilinear(src, m, W, H);
      const ref = directBilinear(src, m, W, H);
      let maxd = 0;
      for (let i = 0; i < ref.length; i++) maxd = Math.max(maxd, Math.abs(exact[i]! - ref[i]!));
      // the two ways of inverting m agree on the source coordinates to a few ulps of |u| ≲ 300 (≈ 1e-13 px); times
      // a pixel step of at most 255 per px, plus a few ulps of the weighted sum: ≲ 1e-10 (measured ≤ 1.5e-11)
      expect([name, maxd < 1e-10]).toEqual([name, true]);
      const out = warpAffine(src, m, W, H, { mode: 'float' }).data;
      const wrong: number[] = [];
      for (let i = 0; i < out.length; i++) if (out[i] !== Math.floor(exact[i]! + 0.5)) wrong.push(i);
      expect([name, wrong]).toEqual([name, []]);
      // so the uint8 output equals the reference rounded, except where the reference is within 1e-10 of a tie
      for (let i = 0; i < out.length; i++) if (Math.abs((ref[i]! % 1) - 0.5) > 1e-10 && out[i] !== Math.round(ref[i]!)) wrong.push(i);
      expect([name, wrong]).toEqual([name, []]);
    }
    // exact ties: a half-pixel shift averages two integers, (a + b) / 2 with a + b odd rounds up
    const h = warpAffineBilinear(img, Float64Array.from([1, 0, -0.5, 0, 1, 0]), 8, 4);
    const hOut = warpAffine(img, Float64Array.from([1, 0, -0.5, 0, 1, 0]), 8, 4, { mode: 'float' }).data;
    let ties = 0;
    for (let y = 0; y < 4; y++)
      for (let x = 0; x < 8; x++)
        for (let c = 0; c < 3; c++) {
          const a = img.data[(y * img.width + x) * 3 + c]!;
          const b = img.data[(y * img.width + x + 1) * 3 + c]!;
          expect(h[(y * 8 + x) * 3 + c]).toBe((a + b) / 2);
          expect(hOut[(y * 8 + x) * 3 + c]).toBe(Math.ceil((a + b) / 2));
          if ((a + b) % 2) ties++;
        }
    expect(ties).toBeGreaterThan(10);
  });

  it("opencv mode equals OpenCV's fixed-point warpAffine (INTER_BITS 5, 15-bit weights, BORDER_CONSTANT) bit for bit", () => {
    // the emulated table: (32 − fy)(32 − fx)·32 … except cell 0, [32767, 0, 0, 1] where warpAffine uses
    // [32768, 0, 0, 0]; on uint8 both give p00: (32767·p00 + p11 + 16384) >> 15 = p00 as 0 ≤ p11 − p00 + 16384 < 32768
    const tab = bilinearTabI();
    expect(Array.from(tab.subarray(0, 4))).toEqual([32767, 0, 0, 1]);
    let offTable = 0;
    for (let a = 1; a < 1024; a++) {
      const [fy, fx] = [a >> 5, a & 31];
      const want = [(32 - fy) * (32 - fx) * 32, (32 - fy) * fx * 32, fy * (32 - fx) * 32, fy * fx * 32];
      if (want.some((w, k) => tab[a * 4 + k] !== w)) offTable++;
    }
    expect(offTable).toBe(0);
    let evenTies = 0;
    let outside = 0;
    for (const [name, src, m, W, H] of warpCases()) {
      const got = warpAffine(src, m, W, H).data;
      const want = cvWarpAffineLinear8UC3(src, m, W, H);
      evenTies += want.evenTies;
      const wrong: string[] = [];
      for (let i = 0; i < got.length && wrong.length < 5; i++) if (got[i] !== want.data[i]) wrong.push(`(${Math.floor(i / 3) % W}, ${Math.floor(i / 3 / W)}) c${i % 3}: ${got[i]} vs ${want.data[i]}`);
      expect([name, wrong]).toEqual([name, []]);
      if (name.startsWith('crop over') || name.startsWith('tiny')) outside += want.data.filter((v) => v === 0).length;
    }
    // the cases do exercise what distinguishes the arithmetic: cvRound ties that half-even rounds down, and borders
    expect(evenTies).toBeGreaterThan(200);
    expect(outside).toBeGreaterThan(5000);
  });

  it('opencv mode is exact for integer and half-pixel translations, with zero border', () => {
    const t = warpAffine(img, Float64Array.from([1, 0, -3, 0, 1, 2]), 20, 10);
    for (let y = 0; y < 10; y++)
      for (let x = 0; x < 20; x++)
        for (let c = 0; c < 3; c++) {
          const sx = x + 3;
          const sy = y - 2;
          const want = sy < 0 ? 0 : img.data[(sy * img.width + sx) * 3 + c]!;
          expect(t.data[(y * 20 + x) * 3 + c]).toBe(want);
        }
    // half-pixel shift in x: (a + b) / 2 rounded half up by the fixed-point cast
    const h = warpAffine(img, Float64Array.from([1, 0, -0.5, 0, 1, 0]), 8, 4);
    for (let y = 0; y < 4; y++)
      for (let x = 0; x < 8; x++) {
        const a = img.data[(y * img.width + x) * 3]!;
        const b = img.data[(y * img.width + x + 1) * 3]!;
        expect(h.data[(y * 8 + x) * 3]).toBe((a * 16384 + b * 16384 + 16384) >> 15);
      }
  });

  it('alignFace maps the landmarks onto the template', () => {
    // a bright dot at each landmark lands near the template point
    const w = 200;
    const data = new Uint8Array(w * w * 3);
    const lm = [[60, 80], [120, 78], [90, 110], [66, 140], [116, 138]];
    for (const [x, y] of lm) for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) data[((y! + dy) * w + x! + dx) * 3] = 255;
    const out = alignFace({ width: w, height: w, data }, lm);
    const m2 = estimateSimilarity(lm);
    lm.forEach(([x, y]) => {
      const u = Math.round(m2[0]! * x! + m2[1]! * y! + m2[2]!);
      const v = Math.round(m2[3]! * x! + m2[4]! * y! + m2[5]!);
      expect(out.data[(v * 112 + u) * 3]).toBeGreaterThan(100);
    });
    expect(() => alignFace({ width: w, height: w, data }, lm.slice(0, 4))).toThrow(/landmarks/);
  });
});
