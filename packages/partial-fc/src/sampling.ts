import { PfcError, type Rng } from '@pfc/core';

/** The sampled class set of one shard for one step. */
export interface Sampled {
  /** Sorted ascending local class ids of the sampled centers, or `null` when every local class is used. */
  index: Int32Array | null;
  /** Labels of the global batch as column indices into the sampled set, `-1` where the class lives elsewhere. */
  labels: Int32Array;
  /** Whether there were more distinct positives than `numSample` (the set is then exactly the positives). */
  positivesOnly: boolean;
}

/**
 * Maps global labels to this shard: `label - classStart` inside `[classStart, classStart + numLocal)`, else -1.
 * @param labels global labels [N] (int32)
 */
export function localizeLabels(labels: Int32Array, classStart: number, numLocal: number): Int32Array {
  const out = new Int32Array(labels.length);
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]! - classStart;
    out[i] = l >= 0 && l < numLocal ? l : -1;
  }
  return out;
}

/** Sorted unique non-negative values of `local`. */
function positivesOf(local: Int32Array): Int32Array {
  const pos = Array.from(new Set(Array.from(local).filter((v) => v >= 0))).sort((a, b) => a - b);
  return Int32Array.from(pos);
}

/** Position of `v` in sorted `arr`, or -1 (binary search; the reference's searchsorted on a value that is present). */
function searchSorted(arr: Int32Array, v: number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo < arr.length && arr[lo] === v ? lo : -1;
}

/** Remaps localised labels to positions in the sorted sampled `index`. */
export function remapLabels(local: Int32Array, index: Int32Array): Int32Array {
  const out = new Int32Array(local.length);
  for (let i = 0; i < local.length; i++) {
    const l = local[i]!;
    out[i] = l < 0 ? -1 : searchSorted(index, l);
  }
  return out;
}

/** k-th smallest (0-based) of `a`, reordering `a` in place (Hoare quickselect, middle pivot). */
function quickselect(a: Float64Array<ArrayBufferLike>, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k]!;
  }
  return a[k]!;
}

/**
 * Indices of the `k` largest `keys`, sorted ascending (the reference's `topk(keys, k)` followed by `sort`).
 * Ties at the boundary keep the lower indices. O(n) expected.
 */
export function topKSorted(keys: Float64Array, k: number, scratch: Float64Array<ArrayBufferLike> = new Float64Array(keys.length)): Int32Array {
  const n = keys.length;
  const out = new Int32Array(k);
  if (k <= 0) return out;
  if (k >= n) {
    for (let i = 0; i < n; i++) out[i] = i;
    return out;
  }
  scratch.set(keys);
  const threshold = quickselect(scratch.subarray(0, n), n - k);
  let greater = 0;
  for (let i = 0; i < n; i++) if (keys[i]! > threshold) greater++;
  let ties = k - greater;
  let o = 0;
  for (let i = 0; i < n; i++) {
    const v = keys[i]!;
    if (v > threshold || (v === threshold && ties-- > 0)) out[o++] = i;
  }
  return out;
}

/** How the sampler gets its uniform keys: a generator, or keys injected for tests (the reference's `torch.rand`). */
export type KeySource = { rng: Rng } | { keys: ArrayLike<number> };

/**
 * Samples the class centers of one shard exactly as the reference (`partial_fc_v2.py::sample`): positives are
 * forced in (their keys set to 2.0), the rest are the top `numSample` uniform keys, the kept ids are sorted
 * ascending and labels remapped by binary search. With more distinct positives than `numSample` the set is the
 * positives. Uniform keys are drawn only in the sampling branch, as the reference.
 * @param local localised labels [N] (-1 = other shard)
 * @param keyScratch reusable buffer of `numLocal` float64 keys
 */
export function sampleCenters(
  local: Int32Array,
  numLocal: number,
  numSample: number,
  source: KeySource,
  keyScratch: Float64Array<ArrayBufferLike> = new Float64Array(numLocal),
  selectScratch?: Float64Array<ArrayBufferLike>,
): Sampled {
  const pos = positivesOf(local);
  if (numSample < pos.length) {
    return { index: pos, labels: remapLabels(local, pos), positivesOnly: true };
  }
  const keys = keyScratch.length === numLocal ? keyScratch : new Float64Array(numLocal);
  if ('keys' in source) {
    if (source.keys.length !== numLocal) {
      throw new PfcError('E_ARGUMENT', `sampleCenters: injected keys must have numLocal = ${numLocal} entries, got ${source.keys.length}`, {
        details: { expected: numLocal, actual: source.keys.length },
      });
    }
    for (let i = 0; i < numLocal; i++) keys[i] = source.keys[i]!;
  } else {
    for (let i = 0; i < numLocal; i++) keys[i] = source.rng.uniform();
  }
  for (let i = 0; i < pos.length; i++) keys[pos[i]!] = 2.0;
  const index = topKSorted(keys, numSample, selectScratch && selectScratch.length >= numLocal ? selectScratch.subarray(0, numLocal) : undefined);
  return { index, labels: remapLabels(local, index), positivesOnly: false };
}

/**
 * Uses a forced sampled set (global class ids, e.g. a vector's `sample_index`): keeps the ids in this shard,
 * sorted, and checks that every positive is among them (`E_SAMPLE_INDEX` otherwise).
 */
export function forcedCenters(local: Int32Array, sampleIndex: ArrayLike<number>, classStart: number, numLocal: number): Sampled {
  const ids = new Set<number>();
  for (let i = 0; i < sampleIndex.length; i++) {
    const l = sampleIndex[i]! - classStart;
    if (l >= 0 && l < numLocal) ids.add(l);
  }
  const index = Int32Array.from([...ids].sort((a, b) => a - b));
  const labels = remapLabels(local, index);
  for (let i = 0; i < local.length; i++) {
    if (local[i]! >= 0 && labels[i]! < 0) {
      throw new PfcError(
        'E_SAMPLE_INDEX',
        `forced sample index: the positive class ${local[i]! + classStart} of row ${i} is not in the forced set`,
        { details: { row: i, label: local[i]! + classStart } },
      );
    }
  }
  return { index, labels, positivesOnly: false };
}
