import { Rng } from '@pfc/core';
import { ARCFACE_TEMPLATE, alignFace, estimateSimilarity, invertAffine, landmarks68To5, warpAffine } from './align';
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

/** Direct bilinear sampling with zero padding, written independently of warpAffine. */
function directBilinear(img: RgbImage, m: Float64Array, W: number, H: number): Uint8Array {
  const det = m[0]! * m[4]! - m[1]! * m[3]!;
  const out = new Uint8Array(W * H * 3);
  const at = (x: number, y: number, c: number) => (x < 0 || y < 0 || x >= img.width || y >= img.height ? 0 : img.data[(y * img.width + x) * 3 + c]!);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      // solve m · (u, v, 1) = (x, y)
      const bx = x - m[2]!;
      const by = y - m[5]!;
      const u = (m[4]! * bx - m[1]! * by) / det;
      const v = (-m[3]! * bx + m[0]! * by) / det;
      const x0 = Math.floor(u);
      const y0 = Math.floor(v);
      const a = u - x0;
      const b = v - y0;
      for (let c = 0; c < 3; c++) {
        const val = at(x0, y0, c) * (1 - a) * (1 - b) + at(x0 + 1, y0, c) * a * (1 - b) + at(x0, y0 + 1, c) * (1 - a) * b + at(x0 + 1, y0 + 1, c) * a * b;
        out[(y * W + x) * 3 + c] = Math.round(val);
      }
    }
  return out;
}

describe('warpAffine', () => {
  const img = synthetic(150, 130);
  const m = estimateSimilarity([[40, 50], [95, 48], [70, 75], [48, 100], [92, 99]]);

  it("float mode equals a direct bilinear reference (a pixel may differ by 1 where x.5 rounding meets float round-off)", () => {
    const a = warpAffine(img, m, 112, 112, { mode: 'float' }).data;
    const b = directBilinear(img, m, 112, 112);
    let maxd = 0;
    let ndiff = 0;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i]! - b[i]!);
      maxd = Math.max(maxd, d);
      if (d) ndiff++;
    }
    expect(maxd).toBeLessThanOrEqual(1);
    expect(ndiff).toBeLessThan(a.length / 1000);
  });

  it('opencv mode (1/32-pixel fixed point) stays within 2 levels of exact bilinear inside a smooth image', () => {
    // the 1/64-pixel coordinate quantisation moves a sample by at most 1/64 px: a few levels where the image meets
    // the zero border, a fraction of a level on the smooth interior; only interior samples are compared
    const smooth: RgbImage = { ...img, data: img.data.map((v, i) => (i % 3 === 1 ? v : 100)) };
    const a = warpAffine(smooth, m, 112, 112).data;
    const b = directBilinear(smooth, m, 112, 112);
    const iM = invertAffine(m);
    let checked = 0;
    for (let i = 0; i < a.length; i++) {
      const x = Math.floor(i / 3) % 112;
      const y = Math.floor(i / 3 / 112);
      const u = iM[0]! * x + iM[1]! * y + iM[2]!;
      const v = iM[3]! * x + iM[4]! * y + iM[5]!;
      if (u < 0.1 || v < 0.1 || u > smooth.width - 1.1 || v > smooth.height - 1.1) continue;
      checked++;
      expect(Math.abs(a[i]! - b[i]!)).toBeLessThanOrEqual(2);
    }
    expect(checked).toBeGreaterThan(a.length / 2);
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
