import { assertArg } from '@pfc/core';
import { pairwiseSum } from './roc';

const f32 = Math.fround;

/**
 * numpy's float32 `add.reduce` over a contiguous row (pairwise summation: 8 accumulators per block of ≤ 128,
 * recursive halving above), so distances match the reference bit for bit.
 */
function pairwiseSum32(a: Float32Array, off: number, n: number): number {
  if (n < 8) {
    let res = -0;
    for (let i = 0; i < n; i++) res = f32(res + a[off + i]!);
    return res;
  }
  if (n <= 128) {
    const r = [a[off]!, a[off + 1]!, a[off + 2]!, a[off + 3]!, a[off + 4]!, a[off + 5]!, a[off + 6]!, a[off + 7]!];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] = f32(r[j]! + a[off + i + j]!);
    let res = f32(f32(f32(r[0]! + r[1]!) + f32(r[2]! + r[3]!)) + f32(f32(r[4]! + r[5]!) + f32(r[6]! + r[7]!)));
    for (; i < n; i++) res = f32(res + a[off + i]!);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return f32(pairwiseSum32(a, off, n2) + pairwiseSum32(a, off + n2, n - n2));
}

/**
 * Squared L2 distance of consecutive embedding rows, `‖e[2p] − e[2p+1]‖²`, in float32 exactly as the reference's
 * `np.sum(np.square(e1 − e2), 1)` on float32 embeddings.
 * @param embeddings [2P, d] float32, row-major (already L2-normalised for the verification protocol)
 * @param dim d
 * @returns [P] distances (float32 values)
 */
export function pairDistances(embeddings: Float32Array, dim: number): Float32Array {
  assertArg(dim > 0 && embeddings.length % (2 * dim) === 0, 'pairDistances', 'embeddings.length', embeddings.length, `a multiple of 2 × dim = ${2 * dim}`);
  const pairs = embeddings.length / (2 * dim);
  const out = new Float32Array(pairs);
  const sq = new Float32Array(dim);
  for (let p = 0; p < pairs; p++) {
    const a = 2 * p * dim;
    const b = a + dim;
    for (let k = 0; k < dim; k++) {
      const d = f32(embeddings[a + k]! - embeddings[b + k]!);
      sq[k] = f32(d * d);
    }
    out[p] = pairwiseSum32(sq, 0, dim);
  }
  return out;
}

/**
 * L2-normalises rows in float32 like `sklearn.preprocessing.normalize` (divide by the float32 norm; zero rows stay 0).
 * @param x [n, d] float32
 * @returns a new [n, d] float32 array
 */
export function l2NormalizeRows(x: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let s = 0;
    for (let k = 0; k < dim; k++) s += x[r * dim + k]! * x[r * dim + k]!;
    const n = f32(Math.sqrt(s));
    for (let k = 0; k < dim; k++) out[r * dim + k] = n === 0 ? x[r * dim + k]! : x[r * dim + k]! / n;
  }
  return out;
}

/** The reference's 400 thresholds, `np.arange(0, 4, 0.01)`: `i * 0.01` in float64. */
export function referenceThresholds(step = 0.01, stop = 4): Float64Array {
  const n = Math.ceil(stop / step);
  return Float64Array.from({ length: n }, (_, i) => i * step);
}

/** sklearn `KFold(n_splits, shuffle=False)`: contiguous test folds, the first `n mod k` one element larger. */
export function kFoldBounds(n: number, folds: number): [number, number][] {
  assertArg(Number.isInteger(folds) && folds >= 2 && folds <= n, 'kFoldBounds', 'folds', folds, `an integer in [2, n = ${n}]`);
  const out: [number, number][] = [];
  let start = 0;
  for (let f = 0; f < folds; f++) {
    const size = Math.floor(n / folds) + (f < n % folds ? 1 : 0);
    out.push([start, start + size]);
    start += size;
  }
  return out;
}

/** One fold of the 10-fold protocol. */
export interface VerificationFold {
  fold: number;
  testStart: number;
  testEnd: number;
  bestThresholdIndex: number;
  bestThreshold: number;
  trainAccuracy: number;
  testAccuracy: number;
}

/** Result of {@link evaluateVerification}. */
export interface VerificationResult {
  pairs: number;
  /** Mean of the fold test accuracies. */
  accuracy: number;
  /** Population standard deviation of the fold accuracies (`np.std`). */
  accuracyStd: number;
  /** Per-fold details (best train threshold, train and test accuracy). */
  folds: VerificationFold[];
  /** Mean over folds of the chosen threshold (squared L2 distance). */
  bestThreshold: number;
  /** Mean over folds of test TPR/FPR per threshold (the reference's `tpr`, `fpr`). */
  tpr: Float64Array;
  fpr: Float64Array;
  thresholds: Float64Array;
  /**
   * TAR at FAR = `farTarget` (the reference's VAL@FAR), mean and std over folds, and the mean FAR actually reached;
   * null when it is not well defined (a test fold without genuine or impostor pairs).
   */
  tarAtFar: { far: number; tar: number; tarStd: number; farTarget: number } | null;
  /** Distances used, [P] float32. */
  distances: Float32Array;
}

/** Options of {@link evaluateVerification}. */
export interface EvaluateVerificationOptions {
  /** Number of folds (reference 10). */
  folds?: number;
  /** FAR target of the VAL@FAR part (reference 1e-3). */
  farTarget?: number;
}

function mean(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return s / a.length;
}

/** numpy's `np.mean` (pairwise summation, then divide). */
function npMean(a: number[]): number {
  return pairwiseSum(Float64Array.from(a), 0, a.length) / a.length;
}
function npStd(a: number[]): number {
  const m = npMean(a);
  return Math.sqrt(npMean(a.map((v) => (v - m) * (v - m))));
}

/**
 * The reference's 10-fold verification (`eval/verification.py::evaluate` with `pca = 0`) on precomputed distances:
 * for each fold pick the threshold in {0, 0.01, …, 3.99} maximising accuracy on the other folds (first maximum),
 * predict "same" iff `d < threshold`, score the held-out fold; also TPR/FPR curves and TAR@FAR (VAL@FAR, thresholds
 * step 0.001, threshold where train FAR = target by linear interpolation over the distinct FAR values).
 * @param distances [P] squared L2 distances of L2-normalised (flip-fused) embeddings
 * @param issame [P] labels
 */
export function evaluateDistances(distances: Float32Array | Float64Array, issame: ArrayLike<boolean | number>, options: EvaluateVerificationOptions = {}): VerificationResult {
  const nFolds = options.folds ?? 10;
  const farTarget = options.farTarget ?? 1e-3;
  const n = distances.length;
  assertArg(issame.length === n, 'evaluateDistances', 'issame.length', issame.length, `equal to the number of pairs ${n}`);
  const actual = Uint8Array.from({ length: n }, (_, i) => (issame[i] ? 1 : 0));
  const thresholds = referenceThresholds();
  const T = thresholds.length;
  const bounds = kFoldBounds(n, nFolds);

  // counts per fold and threshold: tp, fp, tn, fn (prediction d < t)
  const tp = new Int32Array(nFolds * T);
  const fp = new Int32Array(nFolds * T);
  const pos = new Int32Array(nFolds);
  const neg = new Int32Array(nFolds);
  bounds.forEach(([s, e], f) => {
    for (let i = s; i < e; i++) {
      const d = distances[i]!;
      if (actual[i]) pos[f]!++;
      else neg[f]!++;
      // thresholds strictly above d predict "same": first index k with k*0.01 > d
      let k = 0;
      while (k < T && !(d < thresholds[k]!)) k++;
      const arr = actual[i] ? tp : fp;
      for (let t = k; t < T; t++) arr[f * T + t]!++;
    }
  });
  const totPos = pos.reduce((a, b) => a + b, 0);
  const totNeg = neg.reduce((a, b) => a + b, 0);

  const folds: VerificationFold[] = [];
  const tprs = new Float64Array(T);
  const fprs = new Float64Array(T);
  bounds.forEach(([s, e], f) => {
    const trainN = n - (e - s);
    let best = -1;
    let bestAcc = -1;
    for (let t = 0; t < T; t++) {
      let tpT = 0;
      let fpT = 0;
      for (let g = 0; g < nFolds; g++) {
        tpT += tp[g * T + t]!;
        fpT += fp[g * T + t]!;
      }
      const trTp = tpT - tp[f * T + t]!;
      const trFp = fpT - fp[f * T + t]!;
      const trTn = totNeg - neg[f]! - trFp;
      const acc = (trTp + trTn) / trainN;
      if (acc > bestAcc) {
        bestAcc = acc;
        best = t;
      }
    }
    for (let t = 0; t < T; t++) {
      const tpF = tp[f * T + t]!;
      const fpF = fp[f * T + t]!;
      tprs[t]! += (pos[f] === 0 ? 0 : tpF / pos[f]!) / nFolds;
      fprs[t]! += (neg[f] === 0 ? 0 : fpF / neg[f]!) / nFolds;
    }
    const testAcc = (tp[f * T + best]! + (neg[f]! - fp[f * T + best]!)) / (e - s);
    folds.push({ fold: f, testStart: s, testEnd: e, bestThresholdIndex: best, bestThreshold: thresholds[best]!, trainAccuracy: bestAcc, testAccuracy: testAcc });
  });
  const accs = folds.map((x) => x.testAccuracy);
  return {
    pairs: n,
    accuracy: npMean(accs),
    accuracyStd: npStd(accs),
    folds,
    bestThreshold: mean(folds.map((x) => x.bestThreshold)),
    tpr: tprs,
    fpr: fprs,
    thresholds,
    tarAtFar: valAtFar(distances, actual, bounds, farTarget),
    distances: distances instanceof Float32Array ? distances : Float32Array.from(distances),
  };
}

/**
 * VAL@FAR as the reference computes it, with one repair: its `interp1d(far_train, thresholds, 'slinear')` fails on
 * the duplicate FAR values every real curve has (current scipy raises). Here the threshold is interpolated linearly
 * between the largest threshold with train FAR ≤ target and the next one with FAR > target; on
 * `vectors/eval/verif_600` this equals the recorded scipy-compatible result (val, val_std, far) to 1e-12. Returns null when
 * a test fold has no genuine or no impostor pair (the rate is undefined).
 */
function valAtFar(dist: Float32Array | Float64Array, actual: Uint8Array, bounds: [number, number][], farTarget: number): VerificationResult['tarAtFar'] {
  const thresholds = referenceThresholds(0.001, 4);
  const T = thresholds.length;
  const n = dist.length;
  const vals: number[] = [];
  const fars: number[] = [];
  for (const [s, e] of bounds) {
    // train FAR per threshold
    const negD: number[] = [];
    for (let i = 0; i < n; i++) if ((i < s || i >= e) && !actual[i]) negD.push(dist[i]!);
    negD.sort((a, b) => a - b);
    if (negD.length === 0) return null;
    const farTrain = new Float64Array(T);
    let j = 0;
    for (let t = 0; t < T; t++) {
      while (j < negD.length && negD[j]! < thresholds[t]!) j++;
      farTrain[t] = j / negD.length;
    }
    let threshold = 0;
    if (farTrain[T - 1]! >= farTarget) {
      let k = 0;
      while (k < T && farTrain[k]! <= farTarget) k++;
      if (k === 0) threshold = thresholds[0]!;
      else if (k === T) threshold = thresholds[T - 1]!;
      else {
        const x0 = farTrain[k - 1]!;
        const x1 = farTrain[k]!;
        threshold = thresholds[k - 1]! + ((farTarget - x0) * (thresholds[k]! - thresholds[k - 1]!)) / (x1 - x0);
      }
    }
    let ta = 0;
    let fa = 0;
    let ns = 0;
    let nd = 0;
    for (let i = s; i < e; i++) {
      const p = dist[i]! < threshold;
      if (actual[i]) {
        ns++;
        if (p) ta++;
      } else {
        nd++;
        if (p) fa++;
      }
    }
    if (ns === 0 || nd === 0) return null;
    vals.push(ta / ns);
    fars.push(fa / nd);
  }
  return { far: npMean(fars), tar: npMean(vals), tarStd: npStd(vals), farTarget };
}

/** Options of {@link evaluateVerification}. */
export interface VerificationEmbeddingsOptions extends EvaluateVerificationOptions {
  /** Embeddings of the mirrored images, [2P, d]; when given they are added before normalisation (flip test). */
  flipEmbeddings?: Float32Array;
}

/** {@link evaluateDistances} plus the embedding facts: XNorm and whether the flip test was used. */
export interface VerificationEmbeddingsResult extends VerificationResult {
  /** Mean L2 norm of all raw embeddings (both passes when flipped), the reference's XNorm. */
  xnorm: number;
  flip: boolean;
  dim: number;
}

/**
 * The reference's `verification.test` from embeddings: XNorm over the raw embeddings, flip fusion by sum,
 * L2-normalisation, squared L2 distances of consecutive rows, then {@link evaluateDistances}.
 * @param embeddings [2P, d] float32 raw embeddings; rows 2p and 2p+1 form pair p
 * @param dim d
 * @param issame [P] labels
 */
export function evaluateVerification(
  embeddings: Float32Array,
  dim: number,
  issame: ArrayLike<boolean | number>,
  options: VerificationEmbeddingsOptions = {},
): VerificationEmbeddingsResult {
  assertArg(embeddings.length === 2 * issame.length * dim, 'evaluateVerification', 'embeddings.length', embeddings.length, `2 × pairs × dim = ${2 * issame.length * dim}`);
  const flip = options.flipEmbeddings;
  if (flip) assertArg(flip.length === embeddings.length, 'evaluateVerification', 'flipEmbeddings.length', flip.length, `${embeddings.length} (same shape as embeddings)`);
  const rows = embeddings.length / dim;
  let normSum = 0;
  const addNorms = (x: Float32Array) => {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = 0; k < dim; k++) s += x[r * dim + k]! * x[r * dim + k]!;
      normSum += Math.sqrt(s);
    }
  };
  addNorms(embeddings);
  let fused = embeddings;
  if (flip) {
    addNorms(flip);
    fused = new Float32Array(embeddings.length);
    for (let i = 0; i < fused.length; i++) fused[i] = embeddings[i]! + flip[i]!;
  }
  const normalized = l2NormalizeRows(fused, dim);
  const res = evaluateDistances(pairDistances(normalized, dim), issame, options);
  return { ...res, xnorm: normSum / (flip ? 2 * rows : rows), flip: flip !== undefined, dim };
}
