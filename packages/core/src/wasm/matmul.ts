/**
 * Matrix products with transpose flags for the wasm backend. Its native `BatchMatMul` runs XNNPACK only without
 * transpose flags and falls back to a naive loop (10–20× slower) with them; XNNPACK also re-packs its right operand
 * for every new tensor. So a flagged product is rewritten as explicit transposes and a flag-free product, choosing
 * between `op(A)·op(B)` and `(op(B)ᵀ·op(A)ᵀ)ᵀ` by the number of elements moved (transposes plus packing the right
 * operand), which keeps the larger operand on the left.
 */
import * as tf from '@tensorflow/tfjs-core';

/** Element moves of computing `op(A)·op(B)` directly (0) or as the transpose of the swapped product (1). */
export function matMulPlanCosts(m: number, k: number, n: number, transposeA: boolean, transposeB: boolean): [number, number] {
  const direct = (transposeA ? m * k : 0) + (transposeB ? k * n : 0) + k * n;
  const swapped = (transposeB ? 0 : k * n) + (transposeA ? 0 : m * k) + m * n + k * m;
  return [direct, swapped];
}

function swapLast2(t: tf.Tensor): tf.Tensor {
  const perm = t.shape.map((_, i) => i);
  const r = perm.length;
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return tf.transpose(t, perm);
}

/**
 * `op(a) · op(b)` for float32 tensors of rank ≥ 2 with broadcast batch dimensions, where `op` transposes the last two
 * dimensions when its flag is set. Calls `flagFree(left, right)` for the one flag-free product it needs; the swapped
 * plan is used only when `allowSwap` (a fused product whose bias applies to the output must keep its order).
 * @param a `[...batch, M, K]` (`[...batch, K, M]` with `transposeA`)
 * @param b `[...batch, K, N]` (`[...batch, N, K]` with `transposeB`)
 * @returns `[...batch, M, N]`
 */
export function matMulWithoutFlags(
  a: tf.Tensor,
  b: tf.Tensor,
  transposeA: boolean,
  transposeB: boolean,
  flagFree: (left: tf.Tensor, right: tf.Tensor) => tf.Tensor,
  allowSwap = true,
): tf.Tensor {
  const ar = a.rank;
  const br = b.rank;
  const m = transposeA ? a.shape[ar - 1]! : a.shape[ar - 2]!;
  const k = transposeA ? a.shape[ar - 2]! : a.shape[ar - 1]!;
  const n = transposeB ? b.shape[br - 2]! : b.shape[br - 1]!;
  const [direct, swapped] = matMulPlanCosts(m, k, n, transposeA, transposeB);
  if (direct <= swapped || !allowSwap) {
    return flagFree(transposeA ? swapLast2(a) : a, transposeB ? swapLast2(b) : b);
  }
  // (op(B)ᵀ · op(A)ᵀ)ᵀ: op(B)ᵀ is b itself when transposeB, op(A)ᵀ is a itself when transposeA.
  return swapLast2(flagFree(transposeB ? b : swapLast2(b), transposeA ? a : swapLast2(a)));
}
