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

/** Transposes row-major `a [m,n]` into a new `[n,m]` array of the same type. */
export function transpose(a: FloatArray, m: number, n: number): FloatArray {
  const out = a instanceof Float64Array ? new Float64Array(m * n) : new Float32Array(m * n);
  const T = 32;
  for (let i0 = 0; i0 < m; i0 += T) {
    const i1 = Math.min(m, i0 + T);
    for (let j0 = 0; j0 < n; j0 += T) {
      const j1 = Math.min(n, j0 + T);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) out[j * m + i] = a[i * n + j]!;
    }
  }
  return out;
}
