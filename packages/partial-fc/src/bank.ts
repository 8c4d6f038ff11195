import { assertArg, fromFloat16Bits, type Rng } from '@pfc/core';

/** Element type of the class-center bank in host memory. `float64` exists for parity checks against float64 vectors. */
export type BankStorage = 'float16' | 'float32' | 'float64';

type Chunk = Float32Array | Float64Array | Uint16Array;

/** Largest number of elements in one typed array of the bank (keeps every array well under V8's limits). */
const MAX_CHUNK_ELEMENTS = 1 << 28;

const HALF_TO_FLOAT = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = fromFloat16Bits(h);
  return t;
})();

/**
 * Rounds the float32 bit patterns in `bits[0..n)` to binary16 (round to nearest even) into `out[off..off+n)`.
 * Inline integer arithmetic: the bank writes 2·K·d values per step.
 */
function encodeHalfRow(bits: Uint32Array, n: number, out: Uint16Array, off: number): void {
  for (let i = 0; i < n; i++) {
    const x = bits[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    let h: number;
    if (exp === 0xff) h = sign | 0x7c00 | (mant ? 0x200 : 0);
    else {
      const e = exp - 112;
      if (e >= 0x1f) h = sign | 0x7c00;
      else if (e <= 0) {
        if (e < -10) h = sign;
        else {
          mant |= 0x800000;
          const shift = 14 - e;
          let half = mant >>> shift;
          const rem = mant & ((1 << shift) - 1);
          const mid = 1 << (shift - 1);
          if (rem > mid || (rem === mid && half & 1)) half++;
          h = sign | half;
        }
      } else {
        h = (e << 10) | (mant >>> 13);
        const rem = mant & 0x1fff;
        if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
        h |= sign;
      }
    }
    out[off + i] = h;
  }
}

/** SGD hyper-parameters of the bank (PyTorch `torch.optim.SGD` without dampening or Nesterov). */
export interface SgdOptions {
  lr: number;
  momentum: number;
  weightDecay: number;
}

/**
 * The class centers of one shard and their SGD momentum, in host memory as typed arrays (rows split into chunks
 * of at most 2^28 elements). Rows are class centers [numLocal, embeddingSize], row-major.
 */
export class ClassBank {
  readonly rowsPerChunk: number;
  private readonly w: Chunk[] = [];
  private readonly m: Chunk[] = [];
  private readonly f32 = new Float32Array(0);
  private readonly u32: Uint32Array;
  private readonly f32m: Float32Array;
  private readonly u32m: Uint32Array;
  private readonly rowA: Float64Array;
  private readonly rowB: Float64Array;

  /**
   * @param rows number of class centers (numLocal)
   * @param dim embedding size
   * @param storage element type of weights and momentum
   */
  constructor(
    readonly rows: number,
    readonly dim: number,
    readonly storage: BankStorage,
  ) {
    assertArg(Number.isInteger(rows) && rows >= 0, 'ClassBank', 'rows', rows, 'a non-negative integer');
    assertArg(Number.isInteger(dim) && dim >= 1, 'ClassBank', 'dim', dim, 'a positive integer');
    this.rowsPerChunk = Math.max(1, Math.floor(MAX_CHUNK_ELEMENTS / dim));
    for (let r = 0; r < rows; r += this.rowsPerChunk) {
      const n = Math.min(this.rowsPerChunk, rows - r) * dim;
      this.w.push(this.alloc(n));
      this.m.push(this.alloc(n));
    }
    this.f32 = new Float32Array(dim);
    this.u32 = new Uint32Array(this.f32.buffer);
    this.f32m = new Float32Array(dim);
    this.u32m = new Uint32Array(this.f32m.buffer);
    this.rowA = new Float64Array(dim);
    this.rowB = new Float64Array(dim);
  }

  private alloc(n: number): Chunk {
    const c = this.storage === 'float16' ? new Uint16Array(n) : this.storage === 'float32' ? new Float32Array(n) : new Float64Array(n);
    // commit the pages now: a fresh large buffer is mapped lazily, and the first write to each row would otherwise
    // page-fault inside the training steps (sampled rows are spread over the whole bank), doubling SGD time early on
    return c.fill(0);
  }

  /** The weight storage arrays, in row order (for checkpoints). */
  weightChunks(): readonly (Float32Array | Float64Array | Uint16Array)[] {
    return this.w;
  }

  /** The momentum storage arrays, in row order (for checkpoints). */
  momentumChunks(): readonly (Float32Array | Float64Array | Uint16Array)[] {
    return this.m;
  }

  /** Bytes held by weights and momentum. */
  get byteLength(): number {
    let b = 0;
    for (const c of this.w) b += c.byteLength;
    for (const c of this.m) b += c.byteLength;
    return b;
  }

  private read(chunks: Chunk[], row: number, out: Float32Array | Float64Array, off: number): void {
    const c = chunks[Math.floor(row / this.rowsPerChunk)]!;
    const base = (row % this.rowsPerChunk) * this.dim;
    const d = this.dim;
    if (c instanceof Uint16Array) {
      for (let j = 0; j < d; j++) out[off + j] = HALF_TO_FLOAT[c[base + j]!]!;
    } else if (out.constructor === c.constructor) {
      (out as Float32Array).set(c.subarray(base, base + d) as Float32Array, off);
    } else {
      for (let j = 0; j < d; j++) out[off + j] = c[base + j]!;
    }
  }

  private write(chunks: Chunk[], row: number, src: ArrayLike<number>, off: number): void {
    const c = chunks[Math.floor(row / this.rowsPerChunk)]!;
    const base = (row % this.rowsPerChunk) * this.dim;
    const d = this.dim;
    if (c instanceof Uint16Array) {
      for (let j = 0; j < d; j++) this.f32[j] = src[off + j]!;
      encodeHalfRow(this.u32, d, c, base);
    } else {
      for (let j = 0; j < d; j++) c[base + j] = src[off + j]!;
    }
  }

  /** Copies weight row `row` into `out[off..off+dim)`. */
  readWeight(row: number, out: Float32Array | Float64Array, off = 0): void {
    this.read(this.w, row, out, off);
  }

  /** Copies momentum row `row` into `out[off..off+dim)`. */
  readMomentum(row: number, out: Float32Array | Float64Array, off = 0): void {
    this.read(this.m, row, out, off);
  }

  /** Sets weight row `row` from `src[off..off+dim)` (rounded to the storage type). */
  writeWeight(row: number, src: ArrayLike<number>, off = 0): void {
    this.write(this.w, row, src, off);
  }

  /** Sets momentum row `row` from `src[off..off+dim)`. */
  writeMomentum(row: number, src: ArrayLike<number>, off = 0): void {
    this.write(this.m, row, src, off);
  }

  /** Fills the weights with Normal(0, std) (the reference's init, std 0.01) and zeroes the momentum. */
  initNormal(rng: Rng, std = 0.01): void {
    const row = new Float64Array(this.dim);
    for (let r = 0; r < this.rows; r++) {
      for (let j = 0; j < this.dim; j++) row[j] = rng.normal(0, std);
      this.writeWeight(r, row);
    }
    for (const c of this.m) c.fill(0);
  }

  /**
   * One PyTorch SGD step on row `row`: `g = grad + wd·w; buf = μ·buf + g; w -= lr·buf` (`grad` null = zero gradient,
   * as V2's unsampled rows). With a zero-initialised momentum the first step gives `buf = g`, as PyTorch.
   */
  sgdRow(row: number, grad: Float64Array | null, gradOff: number, o: SgdOptions): void {
    const ci = Math.floor(row / this.rowsPerChunk);
    const base = (row % this.rowsPerChunk) * this.dim;
    const w = this.w[ci]!;
    const m = this.m[ci]!;
    if (w instanceof Uint16Array) {
      // fused decode → update → encode through float32 scratch rows (same rounding as write(): double → float32 → half)
      const fw = this.f32;
      const fm = this.f32m;
      const mh = m as Uint16Array;
      const d = this.dim;
      const { lr, momentum: mu, weightDecay: wd } = o;
      for (let j = 0; j < d; j++) {
        const wj = HALF_TO_FLOAT[w[base + j]!]!;
        const b = mu * HALF_TO_FLOAT[mh[base + j]!]! + ((grad ? grad[gradOff + j]! : 0) + wd * wj);
        fm[j] = b;
        fw[j] = wj - lr * b;
      }
      encodeHalfRow(this.u32, d, w, base);
      encodeHalfRow(this.u32m, d, mh, base);
    } else if (w instanceof Float32Array) {
      sgdLoop32(w, m as Float32Array, base, this.dim, grad, gradOff, o.lr, o.momentum, o.weightDecay);
    } else {
      sgdLoop(w, m as Float64Array, base, this.dim, grad, gradOff, o.lr, o.momentum, o.weightDecay);
    }
  }
}

// monomorphic loops: one per storage type, so V8 keeps the element accesses fast
function sgdLoop32(w: Float32Array, m: Float32Array, base: number, d: number, g: Float64Array | null, go: number, lr: number, mu: number, wd: number): void {
  if (g) {
    for (let j = 0; j < d; j++) {
      const b = mu * m[base + j]! + (g[go + j]! + wd * w[base + j]!);
      m[base + j] = b;
      w[base + j] = w[base + j]! - lr * b;
    }
  } else {
    for (let j = 0; j < d; j++) {
      const b = mu * m[base + j]! + wd * w[base + j]!;
      m[base + j] = b;
      w[base + j] = w[base + j]! - lr * b;
    }
  }
}

function sgdLoop(w: Float64Array, m: Float64Array, base: number, d: number, g: Float64Array | null, go: number, lr: number, mu: number, wd: number): void {
  if (g) {
    for (let j = 0; j < d; j++) {
      const b = mu * m[base + j]! + (g[go + j]! + wd * w[base + j]!);
      m[base + j] = b;
      w[base + j] = w[base + j]! - lr * b;
    }
  } else {
    for (let j = 0; j < d; j++) {
      const b = mu * m[base + j]! + wd * w[base + j]!;
      m[base + j] = b;
      w[base + j] = w[base + j]! - lr * b;
    }
  }
}
