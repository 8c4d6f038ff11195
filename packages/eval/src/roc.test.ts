import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng, readNpy } from '@pfc/core';
import { IJB_FARS, auc, formatFixed, formatTar, rocCurve, tarAtFar } from './roc';

const vec = join(__dirname, '../../../../shared/vectors/eval/ijbc_roc_ties');

describe('ROC and TAR@FAR', () => {
  (existsSync(vec) ? it : it.skip)('equals sklearn roc_curve and the reference TAR@FAR on ijbc_roc_ties', () => {
    const ref = JSON.parse(readFileSync(join(vec, 'result.json'), 'utf8'));
    const scores = readNpy(join(vec, 'input/scores.npy')).data as Float64Array;
    const labels = Array.from(readNpy(join(vec, 'input/labels.npy')).data as BigInt64Array, Number);
    const roc = rocCurve(scores, labels);
    // ROC points equal, exactly
    expect(Array.from(roc.fpr)).toEqual(Array.from(readNpy(join(vec, 'roc_fpr.npy')).data as Float64Array));
    expect(Array.from(roc.tpr)).toEqual(Array.from(readNpy(join(vec, 'roc_tpr.npy')).data as Float64Array));
    expect(Array.from(roc.thresholds)).toEqual(Array.from(readNpy(join(vec, 'roc_thresholds.npy')).data as Float64Array));
    const tars = tarAtFar(roc, ref.x_labels);
    expect(tars.map((t) => formatTar(t.tar))).toEqual(ref.tar_at_far_percent_str);
    expect(tars.map((t) => t.tar)).toEqual(ref.tar_at_far);
    expect(tars.map((t) => t.fprAtPoint)).toEqual(ref.fpr_at_selected);
    expect(tars.map((t) => t.indexInFlipped)).toEqual(ref.selected_index_in_flipped);
    expect(auc(roc.fpr, roc.tpr)).toBe(ref.auc); // bit-equal: np.trapz's pairwise summation is emulated
  });

  it('equals a brute-force count over distinct thresholds (ties, -0 and 0, large n)', () => {
    const rng = new Rng(7);
    const n = 70000;
    // coarse scores so that ties are frequent, including -0 and 0
    const scores = Float64Array.from({ length: n }, () => Math.round(rng.normal() * 50) / 100);
    scores[5] = -0;
    scores[6] = 0;
    const labels = Array.from({ length: n }, (_, i) => (scores[i]! + rng.normal() * 0.3 > 0.2 ? 1 : 0));
    const big = rocCurve(scores, labels);
    const small = rocCurve(scores.subarray(0, 1 << 16), labels.slice(0, 1 << 16));
    const bigAgain = rocCurve(Array.from(scores), labels);
    expect(Array.from(big.fpr)).toEqual(Array.from(bigAgain.fpr));
    // recompute the big curve on the comparison path by brute force over distinct thresholds
    const distinct = Array.from(new Set(Array.from(scores, (s) => (s === 0 ? 0 : s)))).sort((a, b) => b - a);
    const P = labels.reduce((a: number, b) => a + b, 0);
    const N = n - P;
    const brute = distinct.map((t) => {
      let tp = 0;
      let fp = 0;
      for (let i = 0; i < n; i++) if (scores[i]! >= t) labels[i] ? tp++ : fp++;
      return [fp / N, tp / P];
    });
    const full = rocCurve(scores, labels, { dropIntermediate: false });
    expect(full.fpr.length).toBe(distinct.length + 1);
    brute.forEach(([f, t], i) => {
      expect(full.fpr[i + 1]).toBe(f);
      expect(full.tpr[i + 1]).toBe(t);
    });
    expect(small.fpr.length).toBeGreaterThan(2);
  });

  it('drops collinear points, keeps the first threshold convention selectable', () => {
    // sklearn keeps the first and last point and every corner: tps [1,2,3,3,3,3], fps [0,0,0,1,2,3] -> idx 0, 2, 5
    const roc = rocCurve([0.9, 0.8, 0.7, 0.4, 0.3, 0.2], [1, 1, 1, 0, 0, 0]);
    expect(Array.from(roc.fpr)).toEqual([0, 0, 0, 1]);
    expect(Array.from(roc.tpr)).toEqual([0, 1 / 3, 1, 1]);
    expect(roc.thresholds[0]).toBeCloseTo(1.9, 12);
    expect(rocCurve([0.5, 0.1], [1, 0], { firstThreshold: 'inf' }).thresholds[0]).toBe(Infinity);
    expect(() => rocCurve([0.1], [1, 0])).toThrow(/labels/);
  });

  it('reads TAR at the closest FPR, the larger point on ties', () => {
    const roc = { fpr: Float64Array.from([0, 0.5e-6, 1.5e-6, 1]), tpr: Float64Array.from([0, 0.2, 0.3, 1]), thresholds: new Float64Array(4) };
    // |0.5e-6 - 1e-6| == |1.5e-6 - 1e-6| up to rounding; reversed order prefers the larger FPR when exactly tied
    const [t] = tarAtFar(roc, [1e-6]);
    expect([0.2, 0.3]).toContain(t!.tar);
    const tied = { fpr: Float64Array.from([0, 0.25, 0.75, 1]), tpr: Float64Array.from([0, 0.4, 0.6, 1]), thresholds: new Float64Array(4) };
    expect(tarAtFar(tied, [0.5])[0]!.tar).toBe(0.6);
    expect(IJB_FARS).toHaveLength(6);
  });

  it('formats like Python %.2f (half to even on exact binary ties)', () => {
    expect(formatFixed(0.125, 2)).toBe('0.12');
    expect(formatFixed(0.375, 2)).toBe('0.38');
    expect(formatFixed(99.675, 2)).toBe('99.67');
    expect(formatFixed(2.5, 0)).toBe('2');
    expect(formatFixed(-1.005, 2)).toBe('-1.00');
    expect(formatTar(0.99675)).toBe('99.67');
  });
});
