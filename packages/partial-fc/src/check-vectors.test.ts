import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend, npyToFloat64, readNpy, writeNpy } from '@pfc/core';
import { main } from './cli';
import { checkVectors, type CheckVectorsReport, type WorldSizeCheck } from './vectors';
import { writeReferenceVectors, type FixtureRun, type VectorFixture } from './testing.test-util';

// check-vectors on a vector directory made here, in the peer-semantics layout, with the branches the shared vectors
// lack: injected sampling keys (rand_perm_r{r}.npy, sample rate < 1) and an SGD step (weight_after_sgd.npy).
// The expected arrays come from the naive float64 reference in testing.test-util.ts, not from the code under test.

// C = 23 gives uneven shards at world sizes 2 (12 + 11) and 3 (8 + 8 + 7). Labels put 2 positives in shard 0 and 3
// in shard 1 at world size 2, fewer than numSample, so the injected keys choose the rest of the sampled set.
// lr and weight decay are larger than a training run's so that the decay of the unsampled rows
// (lr·wd·|w|, up to 2.8e-4 here) is well above the 1e-5 weight tolerance: dense and sparse updates are told apart.
const FIXTURE: VectorFixture = {
  C: 23,
  d: 8,
  N: 6,
  labels: [0, 5, 12, 20, 5, 17],
  s: 64,
  m1: 1,
  m2: 0.5,
  m3: 0,
  sampleRate: 0.5,
  sgd: { lr: 0.05, momentum: 0.9, weight_decay: 0.02 },
  update: 'dense',
  worldSizes: [1, 2, 3],
  seed: 7,
};

let root: string;
let denseDir: string;
let sparseDir: string;
let runs: Map<number, FixtureRun>;

beforeAll(async () => {
  await initBackend({ backend: 'cpu', log: null });
  root = mkdtempSync(join(tmpdir(), 'pfc-check-vectors-'));
  denseDir = join(root, 'dense');
  sparseDir = join(root, 'sparse');
  runs = writeReferenceVectors(denseDir, FIXTURE);
  writeReferenceVectors(sparseDir, { ...FIXTURE, update: 'sparse' });
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t) }, out, err };
}

/** Every compared quantity of a run is present (the fixture has them all) and within `tol`. */
function expectRunWithin(run: WorldSizeCheck, tol: { loss: number; grad: number; gradWeight: number; cos: number; margin: number; weight: number }) {
  expect(run.lossError).toBeLessThanOrEqual(tol.loss);
  expect(run.gradEmbeddingsError).toBeLessThanOrEqual(tol.grad);
  expect(run.gradEmbeddingsRawError).not.toBeNull();
  expect(run.gradEmbeddingsRawError!).toBeLessThanOrEqual(tol.grad * run.worldSize);
  expect(run.gradWeightError).not.toBeNull();
  expect(run.gradWeightError!).toBeLessThanOrEqual(tol.gradWeight);
  expect(run.cosLogitsError).not.toBeNull();
  expect(run.cosLogitsError!).toBeLessThanOrEqual(tol.cos);
  expect(run.marginLogitsError).not.toBeNull();
  expect(run.marginLogitsError!).toBeLessThanOrEqual(tol.margin);
  expect(run.labelsRemappedEqual).toBe(true);
  expect(run.sampledSetEqual).toBe(true);
  expect(run.weightAfterSgdError).not.toBeNull();
  expect(run.weightAfterSgdError!).toBeLessThanOrEqual(tol.weight);
  expect(run.pass).toBe(true);
}

const F64_TOL = { loss: 1e-12, grad: 1e-12, gradWeight: 1e-12, cos: 1e-12, margin: 1e-12, weight: 1e-12 };
// float32 against float64 truth: the stated 1e-5 for loss, embedding gradients, cosines and weights; the margin
// logits carry s = 64 times the cosine's float32 rounding (measured 4e-6), and the bank gradients reach |g| ≈ 41 here,
// where one float32 ulp is 3.8e-6 (measured 8e-6; defaultTolerances allows 1e-5 · max|g| ≈ 4e-4).
const F32_TOL = { loss: 1e-5, grad: 1e-5, gradWeight: 1e-4, cos: 1e-5, margin: 1e-4, weight: 1e-5 };

describe('the generated fixture', () => {
  it('samples a strict subset chosen by the injected keys, on uneven shards', () => {
    const ws2 = runs.get(2)!;
    expect(ws2.numLocal).toEqual([12, 11]);
    expect(ws2.numSample).toEqual([6, 5]);
    expect(ws2.sampled).toHaveLength(11);
    expect(runs.get(3)!.numLocal).toEqual([8, 8, 7]);
    // world sizes draw different keys, so their sampled sets differ: the comparison is not vacuous
    expect(runs.get(1)!.sampled).not.toEqual(ws2.sampled);
  });
});

describe('checkVectors with injected keys and an SGD step', () => {
  it('float64, world sizes 1, 2, 3: every quantity ≤ 1e-12', async () => {
    const r = await checkVectors(denseDir, { dtype: 'float64' });
    expect(r.runs.map((x) => x.worldSize)).toEqual([1, 2, 3]);
    expect(r.update).toBe('dense');
    for (const run of r.runs) expectRunWithin(run, F64_TOL);
    expect(r.pass).toBe(true);
    expect(r.sampledSetEqual).toBe(true);
    expect(r.max.weightAfterSgdError!).toBeLessThanOrEqual(1e-12);
  });

  it('float32, world sizes 1 and 2: loss, embedding gradients, cosines and weights ≤ 1e-5', async () => {
    const r = await checkVectors(denseDir, { dtype: 'float32', worldSizes: [1, 2] });
    expect(r.runs.map((x) => x.worldSize)).toEqual([1, 2]);
    for (const run of r.runs) expectRunWithin(run, F32_TOL);
    expect(r.pass).toBe(true);
  });

  it('sparse update: passes against a sparse reference, fails on the weight against a dense one', async () => {
    const sparse = await checkVectors(sparseDir, { dtype: 'float64', worldSizes: [1, 2], update: 'sparse' });
    for (const run of sparse.runs) expectRunWithin(run, F64_TOL);
    expect(sparse.pass).toBe(true);

    const mismatch = await checkVectors(denseDir, { dtype: 'float64', worldSizes: [1, 2], update: 'sparse' });
    expect(mismatch.pass).toBe(false);
    for (const run of mismatch.runs) {
      expect(run.pass).toBe(false);
      // the unsampled rows did not decay: lr·wd·|w| with |w| up to 0.28 (measured 2.6e-4 to 2.8e-4)
      expect(run.weightAfterSgdError!).toBeGreaterThan(1e-5);
      expect(run.lossError).toBeLessThanOrEqual(1e-12);
      expect(run.gradWeightError!).toBeLessThanOrEqual(1e-12);
    }
    const dense = await checkVectors(sparseDir, { dtype: 'float64', worldSizes: [1], update: 'dense' });
    expect(dense.pass).toBe(false);
    expect(dense.runs[0]!.weightAfterSgdError!).toBeGreaterThan(1e-5);
  });

  it('uses the injected keys: other keys for rank 1 give another sampled set, and the check fails', async () => {
    const dir = join(root, 'other-keys');
    writeReferenceVectors(dir, FIXTURE);
    const path = join(dir, 'float64', 'ws2', 'rand_perm_r1.npy');
    const keys = npyToFloat64(readNpy(path));
    // 1 - u reverses the order of the keys: the non-positive classes kept are now the lowest-ranked ones
    writeNpy(path, Float32Array.from(keys, (u) => 1 - u), [keys.length]);
    const r = await checkVectors(dir, { dtype: 'float64', worldSizes: [1, 2] });
    const [ws1, ws2] = r.runs;
    expect(ws1!.pass).toBe(true);
    expect(ws2!.pass).toBe(false);
    expect(ws2!.sampledSetEqual).toBe(false);
    expect(r.sampledSetEqual).toBe(false);
    expect(r.pass).toBe(false);
  });
});

describe('pfc-partial-fc check-vectors on the generated directory', () => {
  it('prints one JSON object with the weight-after-SGD error and exits 0 (float64 and float32, world sizes 1,2)', async () => {
    for (const [dtype, tol] of [
      ['float64', F64_TOL],
      ['float32', F32_TOL],
    ] as const) {
      const c = io();
      expect(await main(['check-vectors', denseDir, '--dtype', dtype, '--world-size', '1,2'], c.io)).toBe(0);
      expect(c.err.join('')).toBe('');
      const report = JSON.parse(c.out.join('')) as CheckVectorsReport;
      expect(report.pass).toBe(true);
      expect(report.dtype).toBe(dtype);
      expect(report.runs.map((x) => x.worldSize)).toEqual([1, 2]);
      for (const run of report.runs) expectRunWithin(run, tol);
      expect(report.max.weightAfterSgdError!).toBeLessThanOrEqual(tol.weight);
    }
  });

  it('--update sparse passes on the sparse reference', async () => {
    const c = io();
    expect(await main(['check-vectors', sparseDir, '--dtype', 'float64', '--world-size', '1,2', '--update', 'sparse'], c.io)).toBe(0);
    expect(JSON.parse(c.out.join('')).update).toBe('sparse');
  });

  it('exits 1 and reports weightAfterSgdError when the expected weight after SGD is perturbed', async () => {
    const dir = join(root, 'perturbed');
    writeReferenceVectors(dir, FIXTURE);
    const path = join(dir, 'float32', 'ws2', 'weight_after_sgd.npy');
    const a = readNpy(path);
    const w = npyToFloat64(a);
    w[3 * FIXTURE.d + 2] = w[3 * FIXTURE.d + 2]! + 1e-3;
    writeNpy(path, Float32Array.from(w), a.shape);
    const c = io();
    expect(await main(['check-vectors', dir, '--world-size', '1,2'], c.io)).toBe(1);
    const report = JSON.parse(c.out.join('')) as CheckVectorsReport;
    expect(report.pass).toBe(false);
    const [ws1, ws2] = report.runs;
    expect(ws1!.pass).toBe(true);
    expect(ws2!.pass).toBe(false);
    // the perturbed quantity is the one out of tolerance, by the amount added (float32 rounding of w ≈ 1e-7 aside)
    expect(ws2!.weightAfterSgdError!).toBeGreaterThan(9.9e-4);
    expect(ws2!.weightAfterSgdError!).toBeLessThan(1.01e-3);
    expect(report.max.weightAfterSgdError).toBe(ws2!.weightAfterSgdError);
    expect(ws2!.lossError).toBeLessThanOrEqual(F32_TOL.loss);
    expect(ws2!.gradEmbeddingsError).toBeLessThanOrEqual(F32_TOL.grad);
    expect(ws2!.gradWeightError!).toBeLessThanOrEqual(F32_TOL.gradWeight);
    expect(ws2!.cosLogitsError!).toBeLessThanOrEqual(F32_TOL.cos);
    expect(ws2!.sampledSetEqual).toBe(true);
  });
});
