import { Rng, assertArg } from '@pfc/core';
import type { RgbImage } from './image';

/** How a synthetic sample is drawn from its identity's base image. */
export interface SynthOptions {
  /** Image side in pixels (default 112, the aligned-face crop). */
  size?: number;
  /** Control-grid side of the identity's smooth base image (default 6: features of about 20 px). */
  grid?: number;
  /** Largest shift of a sample in pixels, each axis (default 6). */
  maxShift?: number;
  /** Largest brightness change of a sample, in pixel levels (default 25). */
  brightness?: number;
  /** Per-pixel noise amplitude, uniform in ±noise levels (default 12). */
  noise?: number;
}

/** The seed of identity `identity` of the synthetic set with `datasetSeed`: distinct identities get distinct seeds. */
export function synthIdentitySeed(datasetSeed: number, identity: number): number {
  assertArg(Number.isInteger(identity) && identity >= 0, 'synthIdentitySeed', 'identity', identity, 'a non-negative integer');
  // splitmix-style mix so nearby (seed, identity) pairs give unrelated streams
  let z = (Math.imul(datasetSeed >>> 0, 0x9e3779b1) ^ Math.imul(identity + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x2c1b3c6d) >>> 0;
  z = Math.imul(z ^ (z >>> 12), 0x297a2d39) >>> 0;
  return (z ^ (z >>> 15)) >>> 0;
}

/** The identity's control grid: `(grid+3)^2 × 3` levels (a margin of control points so shifted views stay smooth). */
function identityGrid(identitySeed: number, grid: number): Float32Array {
  const rng = new Rng(identitySeed).fork('identity');
  const g = grid + 3;
  const out = new Float32Array(g * g * 3);
  // A shared colour cast per identity plus independent smooth variation: identities differ in both.
  const cast = [rng.uniform() * 120 - 60, rng.uniform() * 120 - 60, rng.uniform() * 120 - 60];
  for (let i = 0; i < g * g; i++) {
    const lum = rng.uniform() * 160 - 80;
    for (let c = 0; c < 3; c++) out[3 * i + c] = 128 + cast[c]! * 0.6 + lum + (rng.uniform() * 60 - 30);
  }
  return out;
}

/**
 * Renders sample `sampleIndex` of a synthetic identity: the identity's smooth random base image (a bicubic-like
 * smooth interpolation of a coarse random colour grid, so the image has face-sized blobs) seen through a jitter —
 * a shift of up to `maxShift` pixels, a brightness offset and per-pixel noise — all drawn from
 * `(identitySeed, sampleIndex)`. Equal arguments give equal images, on any machine.
 * @returns RGB HWC uint8, `size × size`
 */
export function synthIdentityImage(identitySeed: number, sampleIndex: number, options: SynthOptions = {}): RgbImage {
  const size = options.size ?? 112;
  const grid = options.grid ?? 6;
  const maxShift = options.maxShift ?? 6;
  const bright = options.brightness ?? 25;
  const noise = options.noise ?? 12;
  assertArg(Number.isInteger(size) && size >= 8, 'synthIdentityImage', 'size', size, 'an integer ≥ 8');
  assertArg(Number.isInteger(grid) && grid >= 1, 'synthIdentityImage', 'grid', grid, 'a positive integer');
  const g = grid + 3;
  const base = identityGrid(identitySeed, grid);
  const rng = new Rng(identitySeed).fork(`sample:${sampleIndex}`);
  const dx = (rng.uniform() * 2 - 1) * maxShift;
  const dy = (rng.uniform() * 2 - 1) * maxShift;
  const db = (rng.uniform() * 2 - 1) * bright;
  // grid cell size in pixels; the grid has a 1.5-cell margin on each side to absorb the shift
  const cell = size / grid;
  const data = new Uint8Array(size * size * 3);
  // Smoothstep interpolation of the grid: C1-smooth, cheap.
  const xs = new Int32Array(size);
  const xw = new Float32Array(size);
  for (let x = 0; x < size; x++) {
    const u = Math.min(Math.max((x + dx) / cell + 1, 0), g - 1.0001);
    const i = Math.floor(u);
    const f = u - i;
    xs[x] = i;
    xw[x] = f * f * (3 - 2 * f);
  }
  let state = rng.nextUint32() | 1;
  // grid rows interpolated along x once per grid row (rows j and j+1), reused by every pixel row between them
  const rowCache = Array.from({ length: g }, () => null as Float32Array | null);
  const interpRow = (j: number): Float32Array => {
    let r = rowCache[j];
    if (r) return r;
    r = new Float32Array(size * 3);
    const r0 = j * g * 3;
    for (let x = 0; x < size; x++) {
      const i3 = r0 + xs[x]! * 3;
      const fx = xw[x]!;
      for (let c = 0; c < 3; c++) r[x * 3 + c] = base[i3 + c]! + (base[i3 + 3 + c]! - base[i3 + c]!) * fx;
    }
    rowCache[j] = r;
    return r;
  };
  const scale = (2 * noise) / 4294967296;
  for (let y = 0; y < size; y++) {
    const v = Math.min(Math.max((y + dy) / cell + 1, 0), g - 1.0001);
    const j = Math.floor(v);
    let fy = v - j;
    fy = fy * fy * (3 - 2 * fy);
    const ra = interpRow(j);
    const rb = interpRow(j + 1);
    const o = y * size * 3;
    for (let k = 0; k < size * 3; k++) {
      // xorshift32 for the noise: a full Rng draw per value would dominate the cost
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      const a = ra[k]!;
      const val = a + (rb[k]! - a) * fy + db + ((state >>> 0) * scale - noise) + 0.5;
      data[o + k] = val < 0 ? 0 : val > 255 ? 255 : val | 0;
    }
  }
  return { width: size, height: size, data };
}
