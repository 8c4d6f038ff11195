import { assertArg } from '@pfc/core';

/** An ROC curve as `sklearn.metrics.roc_curve` returns it (ascending FPR, thresholds descending). */
export interface RocCurve {
  fpr: Float64Array;
  tpr: Float64Array;
  thresholds: Float64Array;
}

/** Options of {@link rocCurve}. */
export interface RocOptions {
  /** Drop points collinear with their neighbours (sklearn default true). */
  dropIntermediate?: boolean;
  /**
   * Threshold of the extra first point (0, 0): `'max+1'` as sklearn ≤ 1.2 (which the reference vectors were made
   * with) or `'inf'` as sklearn ≥ 1.3. Only the threshold differs; FPR/TPR are the same.
   */
  firstThreshold?: 'max+1' | 'inf';
}

/**
 * `sklearn.metrics.roc_curve(labels, scores)` with its exact construction: stable sort by score descending, one
 * point per distinct score (ties form one step), optional removal of collinear intermediate points
 * (`np.diff(fps, 2) == 0 & np.diff(tps, 2) == 0`), and a leading (0, 0) point.
 * Runs in O(n log n) with a typed-array sort; 16M pairs take a few seconds.
 * @param scores [n] similarity scores (higher = more likely genuine)
 * @param labels [n] 1 genuine / 0 impostor (booleans accepted)
 */
export function rocCurve(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>, options: RocOptions = {}): RocCurve {
  const n = scores.length;
  assertArg(labels.length === n, 'rocCurve', 'labels.length', labels.length, `equal to scores.length ${n}`);
  assertArg(n > 0, 'rocCurve', 'scores.length', n, 'at least 1');
  const order = sortDescending(scores);
  // cumulative counts at the last index of each distinct score (typed arrays: 16M pairs fit comfortably)
  const tpsAll = new Float64Array(n);
  const fpsAll = new Float64Array(n);
  const thrAll = new Float64Array(n);
  let m0 = 0;
  let tp = 0;
  let fp = 0;
  let s = scores[order[0]!]!;
  for (let i = 0; i < n; i++) {
    const k = order[i]!;
    if (Number.isNaN(s)) assertArg(false, 'rocCurve', `scores[${k}]`, s, 'a number (NaN found)');
    if (labels[k]) tp++;
    else fp++;
    const next = i + 1 < n ? scores[order[i + 1]!]! : NaN;
    if (i === n - 1 || next !== s) {
      tpsAll[m0] = tp;
      fpsAll[m0] = fp;
      thrAll[m0] = s;
      m0++;
    }
    s = next;
  }
  // sklearn's drop_intermediate: keep first, last and every point where a second difference is non-zero
  const drop = (options.dropIntermediate ?? true) && m0 > 2;
  const keep = new Int32Array(m0);
  let m = 0;
  for (let i = 0; i < m0; i++) {
    if (drop && i > 0 && i < m0 - 1) {
      const d2f = fpsAll[i + 1]! - 2 * fpsAll[i]! + fpsAll[i - 1]!;
      const d2t = tpsAll[i + 1]! - 2 * tpsAll[i]! + tpsAll[i - 1]!;
      if (d2f === 0 && d2t === 0) continue;
    }
    keep[m++] = i;
  }
  const fpr = new Float64Array(m + 1);
  const tpr = new Float64Array(m + 1);
  const thresholds = new Float64Array(m + 1);
  const P = tp;
  const N = fp;
  thresholds[0] = (options.firstThreshold ?? 'max+1') === 'inf' ? Infinity : thrAll[0]! + 1;
  for (let j = 0; j < m; j++) {
    const idx = keep[j]!;
    // sklearn divides by the last cumulative count; an empty class gives NaN (sklearn warns)
    fpr[j + 1] = fpsAll[idx]! / N;
    tpr[j + 1] = tpsAll[idx]! / P;
    thresholds[j + 1] = thrAll[idx]!;
  }
  fpr[0] = N === 0 ? NaN : 0;
  tpr[0] = P === 0 ? NaN : 0;
  return { fpr, tpr, thresholds };
}

/** Indices sorting `scores` descending; ties keep no particular order (only the per-score totals matter). */
function sortDescending(scores: ArrayLike<number>): Uint32Array {
  const n = scores.length;
  // sort (score, index) via a Float64Array of negated scores and an index permutation
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) keys[i] = -scores[i]!;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  // Sorting a Float64Array is native and fast; to carry indices, sort an index array by key in chunks.
  return n <= 1 << 16 ? order.sort((a, b) => keys[a]! - keys[b]! || a - b) : radixArgsort(keys);
}

/** LSD radix argsort of float64 keys ascending (11-bit digits, 6 passes): O(n), stable. */
function radixArgsort(keys: Float64Array): Uint32Array {
  const n = keys.length;
  const hi = new Uint32Array(n);
  const lo = new Uint32Array(n);
  // the IEEE bits through a Uint32 alias (little-endian hosts; Node runs on nothing else here)
  const clean = Float64Array.from(keys, (k) => (k === 0 ? 0 : k));
  const bits = new Uint32Array(clean.buffer);
  for (let i = 0; i < n; i++) {
    let h = bits[2 * i + 1]!;
    let l = bits[2 * i]!;
    // order-preserving map of IEEE bits to unsigned integers
    if (h & 0x80000000) {
      h = ~h >>> 0;
      l = ~l >>> 0;
    } else h = (h | 0x80000000) >>> 0;
    hi[i] = h;
    lo[i] = l;
  }
  let idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  let tmp = new Uint32Array(n);
  const count = new Uint32Array(2048);
  const passes: [Uint32Array, number][] = [
    [lo, 0], [lo, 11], [lo, 22], [hi, 0], [hi, 11], [hi, 22],
  ];
  for (const [src, shift] of passes) {
    const mask = shift === 22 ? 0x3ff : 0x7ff;
    count.fill(0);
    let uniform = true;
    const first = (src[idx[0]!]! >>> shift) & mask;
    for (let i = 0; i < n; i++) {
      const d = (src[i]! >>> shift) & mask;
      count[d]!++;
      if (d !== first) uniform = false;
    }
    if (uniform) continue;
    let sum = 0;
    for (let d = 0; d < 2048; d++) {
      const c = count[d]!;
      count[d] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const k = idx[i]!;
      const d = (src[k]! >>> shift) & mask;
      tmp[count[d]!++] = k;
    }
    [idx, tmp] = [tmp, idx];
  }
  return idx;
}

/** Area under a curve by the trapezoidal rule (`sklearn.metrics.auc`, x ascending). */
export function auc(x: ArrayLike<number>, y: ArrayLike<number>): number {
  // np.trapz: the terms (dx · (y[i] + y[i−1]) / 2) summed with numpy's pairwise summation, so the value is bit-equal
  const terms = new Float64Array(Math.max(0, x.length - 1));
  for (let i = 1; i < x.length; i++) terms[i - 1] = ((x[i]! - x[i - 1]!) * (y[i]! + y[i - 1]!)) / 2;
  return pairwiseSum(terms, 0, terms.length);
}

/** numpy's float64 pairwise summation (`add.reduce` over a contiguous vector). */
export function pairwiseSum(a: Float64Array, off: number, n: number): number {
  if (n < 8) {
    let res = -0;
    for (let i = 0; i < n; i++) res += a[off + i]!;
    return res;
  }
  if (n <= 128) {
    const r = [a[off]!, a[off + 1]!, a[off + 2]!, a[off + 3]!, a[off + 4]!, a[off + 5]!, a[off + 6]!, a[off + 7]!];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j]! += a[off + i + j]!;
    let res = r[0]! + r[1]! + (r[2]! + r[3]!) + (r[4]! + r[5]! + (r[6]! + r[7]!));
    for (; i < n; i++) res += a[off + i]!;
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, off, n2) + pairwiseSum(a, off + n2, n - n2);
}

/** The FAR targets of the IJB table. */
export const IJB_FARS: readonly number[] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/** One TAR@FAR reading. */
export interface TarAtFar {
  far: number;
  /** TPR at the chosen ROC point (fraction). */
  tar: number;
  /** The FPR of the chosen point. */
  fprAtPoint: number;
  /** Index of the chosen point in the reversed (FPR-descending) arrays, as the reference indexes them. */
  indexInFlipped: number;
}

/**
 * TAR at each FAR read as the reference reads it (`eval_ijbc.py`): reverse the ROC arrays, take the point whose
 * FPR is closest to the target in absolute value, the earliest in reversed order on ties.
 * @param roc an ROC from {@link rocCurve}
 * @param fars the targets (default 1e-6…1e-1)
 */
export function tarAtFar(roc: RocCurve, fars: readonly number[] = IJB_FARS): TarAtFar[] {
  const m = roc.fpr.length;
  return fars.map((far) => {
    let best = 0;
    let bestDiff = Infinity;
    for (let j = 0; j < m; j++) {
      const i = m - 1 - j;
      const d = Math.abs(roc.fpr[i]! - far);
      if (d < bestDiff) {
        bestDiff = d;
        best = j;
      }
    }
    const i = m - 1 - best;
    return { far, tar: roc.tpr[i]!, fprAtPoint: roc.fpr[i]!, indexInFlipped: best };
  });
}

/** Formats a TAR as the reference's table cell: `'%.2f' % (tar * 100)` (round half to even on the binary value). */
export function formatTar(tar: number): string {
  return formatFixed(tar * 100, 2);
}

/**
 * Python's `'%.{digits}f' % v`: rounds the exact binary value, half to even on exact ties (JavaScript's `toFixed`
 * rounds exact ties up, e.g. 0.125 → "0.13" where Python prints "0.12").
 */
export function formatFixed(v: number, digits: number): string {
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : v < 0 ? '-inf' : 'nan';
  const exact = Math.abs(v).toFixed(100 > digits + 60 ? digits + 60 : 100); // exact expansion of the double
  const [int, frac = ''] = exact.split('.');
  const head = frac.slice(0, digits);
  const rest = frac.slice(digits);
  const lastDigit = Number((digits > 0 ? head : int!).slice(-1));
  const tieOrAbove = rest[0] !== undefined && rest[0] >= '5';
  const exactTie = rest[0] === '5' && /^0*$/.test(rest.slice(1));
  const roundUp = tieOrAbove && (!exactTie || lastDigit % 2 === 1);
  let s = Math.abs(v).toFixed(digits);
  const truncated = `${int}${digits > 0 ? `.${head}` : ''}`;
  // toFixed rounds half up on exact ties; otherwise it agrees with correct rounding
  if (exactTie) s = roundUp ? s : truncated;
  return `${v < 0 || Object.is(v, -0) ? '-' : ''}${s}`;
}
