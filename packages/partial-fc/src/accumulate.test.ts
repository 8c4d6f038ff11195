import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PfcError, Rng, initBackend } from '@pfc/core';
import { runLocal } from '@pfc/collective';
import { PartialFC, type PartialFCOptions } from './partial-fc';
import { makeProblem, maxAbsDiff } from './testing.test-util';

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

const COS = { s: 64, m1: 1, m2: 0, m3: 0.4 };
const C = 40;
const D = 4;
const B = 4;
const lr = 0.1;
const mu = 0.9;
const wd = 5e-4;
const p = makeProblem(C, D, B, 29);

/** k micro-batches of B rows each (embeddings float64 [B, D], labels [B]). */
function microBatches(k: number, seed: number): { emb: Float64Array; labels: Int32Array }[] {
  const rng = new Rng(seed);
  return Array.from({ length: k }, () => ({
    emb: rng.fillNormal(new Float64Array(B * D)),
    labels: Int32Array.from({ length: B }, () => rng.int(C)),
  }));
}

describe('gradient accumulation: k micro-batches, then one SGD step', () => {
  it.each(['sparse', 'dense'] as const)('%s: equals the PyTorch SGD step on the summed gradients (two windows of k = 3)', async (update) => {
    await runLocal(1, async (comm) => {
      const opts: PartialFCOptions = { numClasses: C, embeddingSize: D, margin: COS, comm, dtype: 'float64', sampleRate: 0.25, update, init: 'zeros', seed: 5 };
      const pfc = new PartialFC(opts);
      // a twin with the same seed samples the same sets; it never updates, so it gives each micro-batch's gradient
      // at the window's weights independently of the accumulator
      const twin = new PartialFC(opts);
      pfc.setWeights(p.weight);
      let w = Float64Array.from(p.weight);
      let m = new Float64Array(w.length);
      for (let window = 0; window < 2; window++) {
        twin.setWeights(w);
        const g = new Float64Array(w.length);
        const union = new Set<number>();
        for (const mb of microBatches(3, 100 + window)) {
          const res = await pfc.forwardBackward(mb.emb, mb.labels, { accumulate: true });
          const ref = await twin.forwardBackward(mb.emb, mb.labels, { returnGradWeight: true });
          expect(Array.from(res.sampledIndex)).toEqual(Array.from(ref.sampledIndex));
          expect(res.loss).toBe(ref.loss);
          ref.sampledIndex.forEach((row, k) => {
            union.add(row);
            for (let j = 0; j < D; j++) g[row * D + j] = g[row * D + j]! + ref.gradWeight![k * D + j]!;
          });
          expect(maxAbsDiff(pfc.getWeights(), w)).toBe(0); // accumulating never moves the bank
        }
        // sampling differs per micro-batch: the accumulated rows are the union, more than one step's 10 rows
        expect(pfc.accumulatedRows).toBe(union.size);
        expect(union.size).toBeGreaterThan(10);
        expect(maxAbsDiff(pfc.getAccumulatedGradient(), g)).toBeLessThan(1e-12);
        pfc.applyUpdate(lr);
        expect(pfc.accumulatedRows).toBe(0);
        const w2 = Float64Array.from(w);
        const m2 = Float64Array.from(m);
        for (let i = 0; i < w.length; i++) {
          if (update === 'sparse' && !union.has(Math.floor(i / D))) continue;
          m2[i] = mu * m[i]! + g[i]! + wd * w[i]!;
          w2[i] = w[i]! - lr * m2[i]!;
        }
        w = w2;
        m = m2;
        // |w| ≈ 1, |buf| ≈ 100: double rounding of a different summation order
        expect(maxAbsDiff(pfc.getWeights(), w)).toBeLessThan(1e-13);
        expect(maxAbsDiff(pfc.getMomentum(), m)).toBeLessThan(1e-12);
      }
      expect(pfc.stepCount).toBe(2);
      const untouched = Array.from({ length: C }, (_, r) => r).filter((r) => maxAbsDiff(pfc.getWeights().subarray(r * D, r * D + D), p.weight.subarray(r * D, r * D + D)) === 0);
      if (update === 'sparse') expect(untouched.length).toBeGreaterThan(0);
      else expect(untouched).toEqual([]);
    });
  });

  it.each([
    ['sparse, float32', 'sparse', 'float32'],
    ['dense, float32', 'dense', 'float32'],
    ['sparse, float16', 'sparse', 'float16'],
    ['dense, float16', 'dense', 'float16'],
  ] as const)('k = 1 is bit-identical to the one-call path (%s)', async (_, update, storage) => {
    await runLocal(2, async (comm) => {
      const opts: PartialFCOptions = { numClasses: C, embeddingSize: D, margin: COS, comm, sampleRate: 0.3, update, storage, seed: 8 };
      const a = new PartialFC(opts);
      const b = new PartialFC(opts);
      for (const mb of microBatches(3, 7 + comm.rank)) {
        const emb = Float32Array.from(mb.emb);
        const ra = await a.forwardBackward(emb, mb.labels, { lr });
        const rb = await b.forwardBackward(emb, mb.labels, { accumulate: true });
        b.applyUpdate(lr);
        expect(rb.loss).toBe(ra.loss);
        expect(Array.from(rb.gradEmbeddings)).toEqual(Array.from(ra.gradEmbeddings));
        expect(Array.from(b.getWeights())).toEqual(Array.from(a.getWeights()));
        expect(Array.from(b.getMomentum())).toEqual(Array.from(a.getMomentum()));
      }
      expect(b.stepCount).toBe(3);
    });
  });

  it('a call with lr after accumulating ones applies the whole window, as applyUpdate', async () => {
    await runLocal(1, async (comm) => {
      const opts: PartialFCOptions = { numClasses: C, embeddingSize: D, margin: COS, comm, sampleRate: 0.25, seed: 3 };
      const a = new PartialFC(opts);
      const b = new PartialFC(opts);
      const mbs = microBatches(3, 11).map((mb) => ({ emb: Float32Array.from(mb.emb), labels: mb.labels }));
      for (let i = 0; i < 3; i++) {
        await a.forwardBackward(mbs[i]!.emb, mbs[i]!.labels, i < 2 ? { accumulate: true } : { lr });
        await b.forwardBackward(mbs[i]!.emb, mbs[i]!.labels, { accumulate: true });
      }
      b.applyUpdate(lr);
      expect(Array.from(a.getWeights())).toEqual(Array.from(b.getWeights()));
      expect(Array.from(a.getMomentum())).toEqual(Array.from(b.getMomentum()));
      expect([a.stepCount, a.accumulatedRows]).toEqual([1, 0]);
    });
  });

  it('without accumulate and lr a step leaves no gradient behind; clearAccumulated and load drop it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-acc-'));
    try {
      await runLocal(1, async (comm) => {
        const pfc = new PartialFC({ numClasses: C, embeddingSize: D, margin: COS, comm, sampleRate: 0.25 });
        const emb = Float32Array.from(p.emb);
        await pfc.forwardBackward(emb, p.labels);
        expect(pfc.accumulatedRows).toBe(0);
        await pfc.forwardBackward(emb, p.labels, { accumulate: true });
        expect(pfc.accumulatedRows).toBe(10);
        pfc.clearAccumulated();
        expect(pfc.accumulatedRows).toBe(0);
        const before = pfc.getWeights();
        pfc.applyUpdate(lr, { update: 'sparse' }); // nothing accumulated: sparse moves no row
        expect(Array.from(pfc.getWeights())).toEqual(Array.from(before));
        await pfc.save(dir);
        await pfc.forwardBackward(emb, p.labels, { accumulate: true });
        await pfc.load(dir);
        expect(pfc.accumulatedRows).toBe(0);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('E_ARGUMENT for a bad learning rate or update kind', async () => {
    await runLocal(1, async (comm) => {
      const pfc = new PartialFC({ numClasses: C, embeddingSize: D, margin: COS, comm });
      for (const bad of [NaN, -1, Infinity]) {
        expect(() => pfc.applyUpdate(bad)).toThrow(PfcError);
        expect(() => pfc.applyUpdate(bad)).toThrow(/applyUpdate: argument 'lr'/);
      }
      expect(() => pfc.applyUpdate(0.1, { update: 'full' as 'dense' })).toThrow(/argument 'update' must be 'sparse' or 'dense'/);
    });
  });
});
