import * as tf from '@tensorflow/tfjs-core';

/** Float arrays the classifier computes on. */
export type FloatArray = Float32Array | Float64Array;

/** `a [m,k] · b [k,n] → [m,n]`, row-major, no transposes. */
export type MatmulFn = (a: FloatArray, m: number, k: number, b: FloatArray, n: number) => FloatArray;

/**
 * Plain typed-array matmul (i-k-j loop, double accumulation in registers of the output type). Used for float64 and
 * for tiny float32 problems.
 */
export function jsMatmul(a: FloatArray, m: number, k: number, b: FloatArray, n: number): FloatArray {
  const out = a instanceof Float64Array ? new Float64Array(m * n) : new Float32Array(m * n);
  const acc = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    acc.fill(0);
    const ai = i * k;
    for (let p = 0; p < k; p++) {
      const v = a[ai + p]!;
      if (v === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) acc[j] = acc[j]! + v * b[bp + j]!;
    }
    out.set(acc, i * n);
  }
  return out;
}

/**
 * tfjs matmul on the active backend, float32, without transpose flags (the wasm backend is 10–20× slower with
 * them). Every tensor it creates is disposed before it returns.
 */
export function tfMatmul(a: FloatArray, m: number, k: number, b: FloatArray, n: number): Float32Array {
  const ta = tf.tensor2d(a instanceof Float32Array ? a : Float32Array.from(a), [m, k]);
  const tb = tf.tensor2d(b instanceof Float32Array ? b : Float32Array.from(b), [k, n]);
  const tc = tf.matMul(ta, tb);
  const out = tc.dataSync() as Float32Array;
  ta.dispose();
  tb.dispose();
  tc.dispose();
  return out;
}

/** Tile edge of {@link transpose}. */
const TILE = 64;

/**
 * Transposes row-major `a [m,n]` into a new `[n,m]` array of the same type. 64×64 tiles, reading down a tile's
 * columns and writing whole output rows: with power-of-two row lengths (512, 8192) strided writes all fall in the
 * same cache sets, while strided reads cost far less (2–3× faster for 8192×512 float32).
 */
export function transpose(a: FloatArray, m: number, n: number): FloatArray {
  return a instanceof Float64Array ? transposeInto(a, new Float64Array(m * n), m, n) : transposeInto(a, new Float32Array(m * n), m, n);
}

// generic over the element type but called with one pair of array types per call site, so V8 keeps each monomorphic
function transposeInto<T extends FloatArray>(a: T, out: T, m: number, n: number): T {
  for (let i0 = 0; i0 < m; i0 += TILE) {
    const i1 = Math.min(m, i0 + TILE);
    for (let j0 = 0; j0 < n; j0 += TILE) {
      const j1 = Math.min(n, j0 + TILE);
      for (let j = j0; j < j1; j++) {
        const o = j * m;
        for (let i = i0; i < i1; i++) out[o + i] = a[i * n + j]!;
      }
    }
  }
  return out;
}
