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
 * `sklearn.metrics.roc_curve(labels, scores)` with its exact construction: one point per distinct score (ties form
 * one step) with the cumulative genuine/impostor counts at or above it, optional removal of collinear intermediate
 * points (`np.diff(fps, 2) == 0 & np.diff(tps, 2) == 0`), and a leading (0, 0) point.
 * Only counts matter, so genuine and impostor scores are sorted apart (native typed-array sorts) and merged: 16M
 * pairs take a couple of seconds.
 * @param scores [n] similarity scores (higher = more likely genuine)
 * @param labels [n] 1 genuine / 0 impostor (booleans accepted)
 */
export function rocCurve(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>, options: RocOptions = {}): RocCurve {
  const n = scores.length;
  assertArg(labels.length === n, 'rocCurve', 'labels.length', labels.length, `equal to scores.length ${n}`);
  assertArg(n > 0, 'rocCurve', 'scores.length', n, 'at least 1');
  let P = 0;
  for (let i = 0; i < n; i++) {
    if (labels[i]) P++;
    if (Number.isNaN(scores[i])) assertArg(false, 'rocCurve', `scores[${i}]`, scores[i], 'a number (NaN found)');
  }
  const N = n - P;
  const pos = new Float64Array(P);
  const neg = new Float64Array(N);
  let ip = 0;
  let ineg = 0;
  for (let i = 0; i < n; i++) {
    // -0 and 0 are one threshold (numpy compares them equal); store +0 so the sorts agree
    const v = scores[i]! === 0 ? 0 : scores[i]!;
    if (labels[i]) pos[ip++] = v;
    else neg[ineg++] = v;
  }
  pos.sort();
  neg.sort();
  // merge from the top: cumulative counts at each distinct score, descending
  const tpsAll = new Float64Array(n);
  const fpsAll = new Float64Array(n);
  const thrAll = new Float64Array(n);
  let m0 = 0;
  let a = P - 1;
  let b = N - 1;
  while (a >= 0 || b >= 0) {
    const t = a < 0 ? neg[b]! : b < 0 ? pos[a]! : Math.max(pos[a]!, neg[b]!);
    while (a >= 0 && pos[a] === t) a--;
    while (b >= 0 && neg[b] === t) b--;
    tpsAll[m0] = P - 1 - a;
    fpsAll[m0] = N - 1 - b;
    thrAll[m0] = t;
    m0++;
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
