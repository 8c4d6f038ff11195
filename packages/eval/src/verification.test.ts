import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readNpy } from '@pfc/core';
import { evaluateDistances, evaluateVerification, kFoldBounds, l2NormalizeRows, pairDistances, referenceThresholds } from './verification';

const vec = join(__dirname, '../../../../shared/vectors/eval/verif_600');

describe('10-fold verification', () => {
  (existsSync(vec) ? it : it.skip)('equals the reference on verif_600 (accuracy to 1e-9, folds, distances, TPR/FPR)', () => {
    const ref = JSON.parse(readFileSync(join(vec, 'result.json'), 'utf8'));
    const emb = readNpy(join(vec, 'input/embeddings.npy'));
    const issame = readNpy(join(vec, 'input/issame.npy')).data as Uint8Array;
    const dim = emb.shape[1]!;
    const dist = pairDistances(emb.data as Float32Array, dim);
    // bit-exact float32 distances (numpy pairwise summation emulated)
    expect(Array.from(dist)).toEqual(Array.from(readNpy(join(vec, 'dist.npy')).data as Float32Array));
    const res = evaluateDistances(dist, issame);
    expect(Math.abs(res.accuracy - ref.accuracy_mean)).toBeLessThan(1e-9);
    expect(Math.abs(res.accuracyStd - ref.accuracy_std)).toBeLessThan(1e-9);
    const accRef = readNpy(join(vec, 'accuracy.npy')).data as Float64Array;
    res.folds.forEach((f, i) => {
      const r = ref.folds[i];
      expect([f.testStart, f.testEnd, f.bestThresholdIndex]).toEqual([r.test_start, r.test_end, r.best_threshold_index]);
      expect(Math.abs(f.trainAccuracy - r.train_accuracy)).toBeLessThan(1e-12);
      expect(Math.abs(f.testAccuracy - accRef[i]!)).toBeLessThan(1e-12);
    });
    const tpr = readNpy(join(vec, 'tpr.npy')).data as Float64Array;
    const fpr = readNpy(join(vec, 'fpr.npy')).data as Float64Array;
    // per-fold rates are averaged in a different order than numpy's mean over axis 0: 1e-12 absolute
    for (let t = 0; t < 400; t++) {
      expect(Math.abs(res.tpr[t]! - tpr[t]!)).toBeLessThan(1e-12);
      expect(Math.abs(res.fpr[t]! - fpr[t]!)).toBeLessThan(1e-12);
    }
    // input embeddings are unit-norm and unflipped: the embedding path gives the same accuracy
    const viaEmb = evaluateVerification(emb.data as Float32Array, dim, issame);
    expect(Math.abs(viaEmb.accuracy - ref.accuracy_mean)).toBeLessThan(1e-9);
    expect(Math.abs(viaEmb.xnorm - 1)).toBeLessThan(1e-6);
    // VAL@FAR=1e-3 as recorded with the scipy-compatible interpolation (result.json: val, val_std, far)
    expect(Math.abs(res.tarAtFar!.tar - ref.val)).toBeLessThan(1e-12);
    expect(Math.abs(res.tarAtFar!.tarStd - ref.val_std)).toBeLessThan(1e-12);
    expect(Math.abs(res.tarAtFar!.far - ref.far)).toBeLessThan(1e-12);
  });

  it('KFold bounds match sklearn (first n mod k folds one larger)', () => {
    expect(kFoldBounds(23, 10)).toEqual([[0, 3], [3, 6], [6, 9], [9, 11], [11, 13], [13, 15], [15, 17], [17, 19], [19, 21], [21, 23]]);
    expect(() => kFoldBounds(5, 10)).toThrow(/folds/);
  });

  it('thresholds are np.arange(0, 4, 0.01)', () => {
    const t = referenceThresholds();
    expect(t.length).toBe(400);
    expect(t[3]).toBe(3 * 0.01);
    expect(t[399]).toBe(399 * 0.01);
  });

  it('separable pairs give accuracy 1 and the strict threshold rule', () => {
    // genuine at distance 0.5, impostor at 2.5: any threshold in (0.5, 2.5] is perfect; the first maximum is 0.51
    const n = 40;
    const issame = Array.from({ length: n }, (_, i) => i % 2 === 0);
    const d = Float32Array.from(issame, (s) => (s ? 0.5 : 2.5));
    const res = evaluateDistances(d, issame);
    expect(res.accuracy).toBe(1);
    expect(res.accuracyStd).toBe(0);
    expect(res.folds.every((f) => f.bestThresholdIndex === 51)).toBe(true);
  });

  it('flip fusion adds the mirrored embedding before normalising, XNorm averages both passes', () => {
    const dim = 2;
    // pair 0: e = (1,0) vs (0,1) alone (distance 2); with flips (0,1),(1,0) they fuse to equal vectors (distance 0)
    const e = Float32Array.from([3, 0, 0, 1, 1, 0, 1, 0]);
    const f = Float32Array.from([0, 3, 1, 0, 1, 0, 1, 0]);
    const plain = evaluateVerification(e, dim, [false, true], { folds: 2 });
    const fused = evaluateVerification(e, dim, [false, true], { folds: 2, flipEmbeddings: f });
    expect(plain.distances[0]).toBeCloseTo(2, 6);
    expect(fused.distances[0]).toBeCloseTo(0, 6);
    expect(plain.xnorm).toBeCloseTo((3 + 1 + 1 + 1) / 4, 12);
    expect(fused.xnorm).toBeCloseTo((3 + 1 + 1 + 1 + 3 + 1 + 1 + 1) / 8, 12);
    expect(fused.flip).toBe(true);
  });

  it('TAR@FAR is null when a fold has no impostor pair', () => {
    const res = evaluateDistances(Float32Array.from({ length: 20 }, () => 0.3), new Array(20).fill(true));
    expect(res.tarAtFar).toBeNull();
    expect(res.accuracy).toBe(1);
  });

  it('validates shapes', () => {
    expect(() => evaluateDistances(new Float32Array(3), [true])).toThrow(/issame/);
    expect(() => evaluateVerification(new Float32Array(6), 2, [true])).toThrow(/embeddings/);
    expect(Array.from(l2NormalizeRows(Float32Array.from([3, 4, 0, 0]), 2))).toEqual([Math.fround(0.6), Math.fround(0.8), 0, 0]);
  });
});
