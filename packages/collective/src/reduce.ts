import { float16ToFloat32, toFloat16Bits } from '@pfc/core';
import type { CollectiveArray, ReduceOp } from './communicator';

/** Name of an array's element type, for checks and messages. */
export function dtypeName(a: CollectiveArray): 'float32' | 'float64' | 'int32' | 'float16' {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  return 'float16';
}

/**
 * Reduces `srcs` (same type and length) element-wise into `out`. fp16 (Uint16Array) is combined in float32 and
 * rounded once at the end, so the result does not depend on the order ranks arrive in.
 */
export function reduceInto<T extends CollectiveArray>(out: T, srcs: readonly T[], op: ReduceOp, offset = 0, length = out.length): T {
  if (out instanceof Uint16Array) {
    const acc = float16ToFloat32((srcs[0] as Uint16Array).subarray(offset, offset + length));
    for (let k = 1; k < srcs.length; k++) {
      const s = float16ToFloat32((srcs[k] as Uint16Array).subarray(offset, offset + length));
      if (op === 'sum') for (let i = 0; i < length; i++) acc[i] = acc[i]! + s[i]!;
      else for (let i = 0; i < length; i++) acc[i] = maxNaN(acc[i]!, s[i]!);
    }
    for (let i = 0; i < length; i++) (out as Uint16Array)[i] = toFloat16Bits(acc[i]!);
    return out;
  }
  const o = out as Float64Array;
  const first = srcs[0] as Float64Array;
  if (op === 'sum') {
    for (let i = 0; i < length; i++) {
      let v = first[offset + i]!;
      for (let k = 1; k < srcs.length; k++) v += (srcs[k] as Float64Array)[offset + i]!;
      o[i] = v;
    }
  } else {
    for (let i = 0; i < length; i++) {
      let v = first[offset + i]!;
      for (let k = 1; k < srcs.length; k++) v = maxNaN(v, (srcs[k] as Float64Array)[offset + i]!);
      o[i] = v;
    }
  }
  // Int32Array stores wrap integer sums modulo 2^32, as MPI_INT does
  return out;
}

/** max that propagates NaN, as MPI_MAX and torch.max do. */
function maxNaN(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return NaN;
  return a > b ? a : b;
}
