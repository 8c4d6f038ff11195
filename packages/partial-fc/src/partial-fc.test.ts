import * as tf from '@tensorflow/tfjs-core';
import { PfcError, initBackend } from '@pfc/core';
import { runLocal } from '@pfc/collective';
import { PartialFC } from './partial-fc';
import { shardOf } from './sharding';
import { assemble, makeProblem, maxAbsDiff, naiveReference, runStep, type Problem } from './testing.test-util';

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

const ARC = { s: 64, m1: 1, m2: 0.5, m3: 0 };
const COS = { s: 64, m1: 1, m2: 0, m3: 0.4 };

async function expectCode(p: Promise<unknown>, code: string, msg?: RegExp): Promise<PfcError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PfcError);
  expect((err as PfcError).code).toBe(code);
  if (msg) expect((err as PfcError).message).toMatch(msg);
  return err as PfcError;
}

describe('PartialFC against an independent dense reference (float64)', () => {
  const p = makeProblem(23, 6, 8, 3);
  it.each([
    ['arcface straight-through', ARC, { s: 64, m2: 0.5, m3: 0 }],
    ['arcface exact', { ...ARC, gradient: 'exact' as const }, { s: 64, m2: 0.5, m3: 0, exact: true }],
    ['cosface', COS, { s: 64, m2: 0, m3: 0.4 }],
    ['cosface + inter-class filter 0.1', { ...COS, interclassFilteringThreshold: 0.1 }, { s: 64, m2: 0, m3: 0.4, threshold: 0.1 }],
  ])('%s: loss and gradients to 1e-10', async (_, margin, ref) => {
    const expected = naiveReference(p, ref);
    const out = await runStep(p, 1, { margin, dtype: 'float64' }, { returnGradWeight: true });
    const { gradE, gradW } = assemble(p, out);
    expect(Math.abs(out[0]!.res.loss - expected.loss)).toBeLessThan(1e-10);
    expect(maxAbsDiff(gradE, expected.gradE)).toBeLessThan(1e-10);
    expect(maxAbsDiff(gradW, expected.gradW)).toBeLessThan(1e-10);
  });
});

describe('world sizes 1, 2, 3 agree (uneven shards: C = 53)', () => {
  const p = makeProblem(53, 8, 12, 5);
  it.each(['float64', 'float32'] as const)('%s, sample rate 1', async (dtype) => {
    const tol = dtype === 'float64' ? 1e-12 : 1e-5;
    const outs = await Promise.all([1, 2, 3].map((W) => runStep(p, W, { margin: ARC, dtype }, { returnGradWeight: true })));
    const [a, b, c] = outs.map((o) => ({ loss: o[0]!.res.loss, ...assemble(p, o) }));
    for (const o of outs) for (const r of o) expect(r.res.loss).toBe(o[0]!.res.loss); // identical on every rank
    for (const x of [b!, c!]) {
      expect(Math.abs(x.loss - a!.loss)).toBeLessThan(tol);
      expect(maxAbsDiff(x.gradE, a!.gradE)).toBeLessThan(tol);
      // float32 bank gradients are ~|1/‖w‖·s| ≈ 100 in magnitude: 1e-5 relative
      expect(maxAbsDiff(x.gradW, a!.gradW)).toBeLessThan(dtype === 'float64' ? 1e-12 : 1e-5 * 100);
    }
    expect(outs[1]!.map((o) => o.pfc.numLocal)).toEqual([27, 26]);
    expect(outs[2]!.map((o) => [o.pfc.classStart, o.pfc.numLocal])).toEqual([[0, 18], [18, 18], [36, 17]]);
  });

  it('sample rate 0.3 with a forced sampled set gives the same loss and gradients on 1, 2, 3 ranks', async () => {
    const forced = Array.from(new Set([...p.labels, 0, 7, 20, 30, 44, 52])).sort((x, y) => x - y);
    const outs = await Promise.all(
      [1, 2, 3].map((W) => runStep(p, W, { margin: COS, dtype: 'float64', sampleRate: 0.3 }, { returnGradWeight: true, sampleIndex: forced })),
    );
    const [a, b, c] = outs.map((o) => ({ loss: o[0]!.res.loss, ...assemble(p, o) }));
    const sampled = outs.map((o) => o.flatMap(({ res, pfc }) => Array.from(res.sampledIndex, (i) => i + pfc.classStart)));
    for (const s of sampled) expect(s).toEqual(forced);
    for (const x of [b!, c!]) {
      expect(Math.abs(x.loss - a!.loss)).toBeLessThan(1e-12);
      expect(maxAbsDiff(x.gradE, a!.gradE)).toBeLessThan(1e-12);
      expect(maxAbsDiff(x.gradW, a!.gradW)).toBeLessThan(1e-12);
    }
    // a forced set that misses a positive is an error
    await expectCode(runStep(p, 1, { margin: COS, sampleRate: 0.3 }, { sampleIndex: [0] }), 'E_SAMPLE_INDEX');
  });

  it('per-rank embedding gradients are the true derivative: a rank at W = 2 gets the W = 1 gradient of its rows', async () => {
    // the reference's raw .grad is W times this; vectors.test.ts checks W × ours against its grad_embeddings_raw.npy
    const o2 = await runStep(p, 2, { margin: ARC, dtype: 'float64' });
    const o1 = await runStep(p, 1, { margin: ARC, dtype: 'float64' });
    const g1 = o1[0]!.res.gradEmbeddings;
    expect(maxAbsDiff(o2[1]!.res.gradEmbeddings, g1.subarray(6 * 8, 12 * 8))).toBeLessThan(1e-12);
  });
});

describe('finite differences (float64)', () => {
  const p = makeProblem(11, 5, 6, 9);
  const lossAt = async (q: Problem, W: number, margin: object) => (await runStep(q, W, { margin: margin as never, dtype: 'float64' }))[0]!.res.loss;
  const fd = async (q: Problem, W: number, margin: object, which: 'emb' | 'weight', i: number, h = 1e-6) => {
    const plus = { ...q, [which]: Float64Array.from(q[which]) };
    const minus = { ...q, [which]: Float64Array.from(q[which]) };
    (plus[which] as Float64Array)[i]! += h;
    (minus[which] as Float64Array)[i]! -= h;
    return ((await lossAt(plus, W, margin)) - (await lossAt(minus, W, margin))) / (2 * h);
  };

  // s = 10 keeps every row's target probability above the 1e-30 floor, where the loss is flat and FD says 0
  it.each([
    ['arcface exact', { ...ARC, s: 10, gradient: 'exact' }, 2],
    ['cosface', { ...COS, s: 10 }, 2],
    ['cosface + filter 0.3', { ...COS, s: 10, interclassFilteringThreshold: 0.3 }, 1],
  ])('%s: analytic gradients match central differences to 1e-5', async (_, margin, W) => {
    const out = await runStep(p, W, { margin: margin as never, dtype: 'float64' }, { returnGradWeight: true });
    const { gradE, gradW } = assemble(p, out);
    // h = 1e-6 on a loss of size ~3: truncation + rounding ≈ 1e-8; 1e-5 leaves margin
    for (const i of [0, 7, 13, 29]) expect(Math.abs((await fd(p, W, margin, 'emb', i)) - gradE[i]!)).toBeLessThan(1e-5);
    for (const i of [0, 12, 33, 54]) expect(Math.abs((await fd(p, W, margin, 'weight', i)) - gradW[i]!)).toBeLessThan(1e-5);
  });

  it('the default straight-through ArcFace gradient is not the derivative (as the reference)', async () => {
    const arc = { ...ARC, s: 10 };
    const out = await runStep(p, 1, { margin: arc, dtype: 'float64' });
    let worst = 0;
    for (const i of [0, 7, 13, 29]) worst = Math.max(worst, Math.abs((await fd(p, 1, arc, 'emb', i)) - out[0]!.res.gradEmbeddings[i]!));
    expect(worst).toBeGreaterThan(1e-3);
  });
});

describe('numeric edge cases', () => {
  const p = makeProblem(9, 4, 4, 11);

  it('overflow: embeddings scaled by 1e30 (float32 input) give the unscaled loss; s = 1e4 stays finite', async () => {
    const base = await runStep(p, 1, { margin: ARC });
    const big = await runStep({ ...p, emb: p.emb.map((v) => v * 1e30) }, 1, { margin: ARC });
    expect(Math.abs(big[0]!.res.loss - base[0]!.res.loss)).toBeLessThan(1e-5);
    const huge = await runStep(p, 1, { margin: { ...COS, s: 1e4 }, dtype: 'float64' }, { returnGradWeight: true });
    const ref = naiveReference(p, { s: 1e4, m2: 0, m3: 0.4 });
    expect(Number.isFinite(huge[0]!.res.loss)).toBe(true);
    expect(Math.abs(huge[0]!.res.loss - ref.loss)).toBeLessThan(1e-9 * ref.loss);
    expect(huge[0]!.res.gradEmbeddings.every(Number.isFinite)).toBe(true);
  });

  it('underflow: embeddings with norm below eps give cos ≈ 0 and the closed-form loss', async () => {
    const out = await runStep({ ...p, emb: p.emb.map((v) => v * 1e-30) }, 1, { margin: ARC, dtype: 'float64' });
    // t = 0 → target logit s·cos(π/2 + m2) = -s·sin(m2); the other C-1 logits are 0
    const zt = -64 * Math.sin(0.5);
    const expected = -Math.log(Math.exp(zt) / (Math.exp(zt) + 8));
    expect(Math.abs(out[0]!.res.loss - expected)).toBeLessThan(1e-9);
    expect(out[0]!.res.gradEmbeddings.every(Number.isFinite)).toBe(true);
  });

  it('huge gap: a perfectly separated batch has loss ≈ 0; a hopeless one is capped at -ln(1e-30) with an uncapped gradient', async () => {
    const C = 4;
    const d = 4;
    const weight = new Float64Array(C * d);
    for (let c = 0; c < C; c++) weight[c * d + c] = 1;
    const labels = Int32Array.from([0, 1, 2, 3]);
    const good: Problem = { C, d, N: 4, weight, labels, emb: Float64Array.from(weight) };
    const g = await runStep(good, 1, { margin: COS, dtype: 'float64' });
    // z_t = 64·0.6, others 0: loss = log(1 + 3e^{-38.4})
    expect(Math.abs(g[0]!.res.loss - Math.log1p(3 * Math.exp(-38.4)))).toBeLessThan(1e-15);
    const emb = weight.map((v) => -v);
    for (let i = 0; i < 4; i++) emb[i * d + ((i + 1) % d)] = 0.1;
    const bad: Problem = { ...good, emb };
    const s = 100;
    const b = await runStep(bad, 1, { margin: { ...COS, s }, dtype: 'float64' }, { returnGradWeight: true });
    expect(Math.abs(b[0]!.res.loss - -Math.log(1e-30))).toBeLessThan(1e-12);
    const ref = naiveReference(bad, { s, m2: 0, m3: 0.4 });
    expect(maxAbsDiff(b[0]!.res.gradEmbeddings, ref.gradE)).toBeLessThan(1e-12);
    expect(Math.max(...b[0]!.res.gradEmbeddings.map(Math.abs))).toBeGreaterThan(1);
  });

  it('NaN in the bank propagates to the loss instead of being hidden', async () => {
    const w = Float64Array.from(p.weight);
    w[5] = NaN;
    const out = await runStep({ ...p, weight: w }, 1, { margin: ARC });
    expect(Number.isNaN(out[0]!.res.loss)).toBe(true);
  });

  it('E_NON_FINITE names the first non-finite embedding (NaN and Inf), on every rank', async () => {
    const e = Float64Array.from(p.emb);
    e[6] = NaN;
    await expectCode(runStep({ ...p, emb: e }, 1, { margin: ARC }), 'E_NON_FINITE', /embeddings\[1, 2\] = NaN/);
    const f = Float64Array.from(p.emb);
    f[13] = -Infinity;
    const err = await expectCode(runStep({ ...p, emb: f }, 2, { margin: ARC }), 'E_NON_FINITE', /rank 1: embeddings\[1, 1\] = -Infinity/);
    expect(err.details).toMatchObject({ rank: 1, row: 1, column: 1 });
  });
});

describe('errors', () => {
  const p = makeProblem(9, 4, 4, 13);

  it('E_LABEL_RANGE names the first offending index (and the rank)', async () => {
    for (const [bad, v] of [[9, /labels\[2\] = 9 is outside \[0, 9\)/], [-1, /labels\[2\] = -1/]] as const) {
      const labels = Int32Array.from(p.labels);
      labels[2] = bad;
      labels[3] = 100;
      await expectCode(runStep({ ...p, labels }, 1, { margin: ARC }), 'E_LABEL_RANGE', v);
    }
    const labels = Int32Array.from(p.labels);
    labels[3] = 9;
    const err = await expectCode(runStep({ ...p, labels }, 2, { margin: ARC }), 'E_LABEL_RANGE', /rank 1: labels\[1\] = 9/);
    expect(err.details).toMatchObject({ rank: 1, index: 1, label: 9 });
  });

  it('E_BATCH_SIZE when ranks or steps differ', async () => {
    const rng = p.emb;
    await expectCode(
      runLocal(2, async (comm) => {
        const pfc = new PartialFC({ numClasses: 9, embeddingSize: 4, margin: ARC, comm });
        const B = comm.rank === 0 ? 2 : 3;
        return pfc.forwardBackward(rng.subarray(0, B * 4), new Int32Array(B));
      }),
      'E_BATCH_SIZE',
      /rank 1: batch size 3 differs from rank 0 \(2\)/,
    );
    await expectCode(
      runLocal(1, async (comm) => {
        const pfc = new PartialFC({ numClasses: 9, embeddingSize: 4, margin: ARC, comm });
        await pfc.forwardBackward(rng.subarray(0, 8), new Int32Array(2));
        return pfc.forwardBackward(rng.subarray(0, 12), new Int32Array(3));
      }),
      'E_BATCH_SIZE',
      /batch size 3 differs from the first step \(2\)/,
    );
  });

  it('E_MARGIN for every combination the reference rejects', () => {
    const comm = { rank: 0, worldSize: 1, backend: 'x', allGather: () => 0 } as never;
    for (const margin of [
      { s: 64, m1: 0.9, m2: 0.5, m3: 0 },
      { s: 64, m1: 1, m2: 0.5, m3: -0.1 },
      { s: 0, m1: 1, m2: 0.5, m3: 0 },
      { s: 64, m1: 1, m2: NaN, m3: 0 },
      { ...COS, interclassFilteringThreshold: 1.5 },
      { ...ARC, gradient: 'true' },
    ]) {
      expect(() => new PartialFC({ numClasses: 9, embeddingSize: 4, margin: margin as never, comm })).toThrow(
        expect.objectContaining({ code: 'E_MARGIN' }) as Error,
      );
    }
    // CosFace ignores m1 and m2 when m3 > 0, as the reference
    expect(() => new PartialFC({ numClasses: 9, embeddingSize: 4, margin: { s: 64, m1: 0.5, m2: 0.3, m3: 0.2 }, comm })).not.toThrow();
  });

  it('E_ARGUMENT for a sample rate outside (0, 1] and E_SHAPE for a wrong embedding length', async () => {
    const comm = { rank: 0, worldSize: 1, backend: 'x', allGather: () => 0 } as never;
    for (const sampleRate of [0, -0.1, 1.5, NaN]) {
      expect(() => new PartialFC({ numClasses: 9, embeddingSize: 4, margin: ARC, comm, sampleRate })).toThrow(/sampleRate/);
    }
    await expectCode(
      runLocal(1, (c) => new PartialFC({ numClasses: 9, embeddingSize: 4, margin: ARC, comm: c }).forwardBackward(new Float32Array(7), new Int32Array(2))),
      'E_SHAPE',
    );
  });
});

describe('SGD on the bank (PyTorch formula: g += wd·w; buf = μ·buf + g; w -= lr·buf)', () => {
  const p = makeProblem(20, 4, 4, 17);
  const lr = 0.1;
  const mu = 0.9;
  const wd = 5e-4;

  it.each(['sparse', 'dense'] as const)('%s update over two steps', async (update) => {
    await runLocal(1, async (comm) => {
      const pfc = new PartialFC({ numClasses: 20, embeddingSize: 4, margin: COS, comm, dtype: 'float64', sampleRate: 0.5, update, init: 'zeros' });
      pfc.setWeights(p.weight);
      let w = Float64Array.from(p.weight);
      let m = new Float64Array(w.length);
      for (let step = 0; step < 2; step++) {
        const res = await pfc.forwardBackward(p.emb, p.labels, { lr, returnGradWeight: true });
        const g = new Float64Array(w.length);
        res.sampledIndex.forEach((row, k) => g.set(res.gradWeight!.subarray(k * 4, k * 4 + 4), row * 4));
        const sampled = new Set(res.sampledIndex);
        const w2 = Float64Array.from(w);
        const m2 = Float64Array.from(m);
        for (let i = 0; i < w.length; i++) {
          if (update === 'sparse' && !sampled.has(Math.floor(i / 4))) continue;
          m2[i] = mu * m[i]! + g[i]! + wd * w[i]!;
          w2[i] = w[i]! - lr * m2[i]!;
        }
        w = w2;
        m = m2;
        expect(maxAbsDiff(pfc.getWeights(), w)).toBeLessThan(1e-13); // |w| ≈ 1, |buf| ≈ 100: double rounding of a different summation order
        expect(maxAbsDiff(pfc.getMomentum(), m)).toBeLessThan(1e-12);
        if (update === 'sparse') expect(sampled.size).toBe(10);
      }
      expect(pfc.stepCount).toBe(2);
    });
  });
});

describe('tensors and storage', () => {
  it('tf.memory().numTensors is constant over 100 training steps (tfjs matmul)', async () => {
    const p = makeProblem(40, 8, 4, 19);
    await runLocal(1, async (comm) => {
      const pfc = new PartialFC({ numClasses: 40, embeddingSize: 8, margin: ARC, comm, sampleRate: 0.5, blockRows: 7 });
      const emb = Float32Array.from(p.emb);
      await pfc.forwardBackward(emb, p.labels, { lr: 0.01 });
      const before = tf.memory().numTensors;
      for (let i = 0; i < 100; i++) await pfc.forwardBackward(emb, p.labels, { lr: 0.01 });
      expect(tf.memory().numTensors).toBe(before);
    });
  });

  it('blocked matmuls (blockRows smaller than K) give the same result as one block', async () => {
    const p = makeProblem(30, 8, 4, 23);
    const one = await runStep(p, 1, { margin: ARC }, { returnGradWeight: true });
    const blocked = await runStep(p, 1, { margin: ARC, blockRows: 4 }, { returnGradWeight: true });
    expect(Math.abs(one[0]!.res.loss - blocked[0]!.res.loss)).toBeLessThan(1e-6);
    expect(maxAbsDiff(one[0]!.res.gradEmbeddings, blocked[0]!.res.gradEmbeddings)).toBeLessThan(1e-6);
  });

  it('blocks without the cached centers (cacheSampled false) give the same loss, gradients and SGD step as one cached block', async () => {
    const p = makeProblem(30, 8, 4, 31);
    for (const W of [1, 2]) {
      const one = await runStep(p, W, { margin: ARC, sampleRate: 0.5 }, { returnGradWeight: true, lr: 0.1 });
      const blocked = await runStep(p, W, { margin: ARC, sampleRate: 0.5, blockRows: 3, cacheSampled: false }, { returnGradWeight: true, lr: 0.1 });
      for (let r = 0; r < W; r++) {
        // the same float32 products in a different grouping of rows: rounding only
        expect(Math.abs(one[r]!.res.loss - blocked[r]!.res.loss)).toBeLessThan(1e-6);
        expect(maxAbsDiff(one[r]!.res.gradEmbeddings, blocked[r]!.res.gradEmbeddings)).toBeLessThan(1e-6);
        expect(maxAbsDiff(one[r]!.res.gradWeight!, blocked[r]!.res.gradWeight!)).toBeLessThan(1e-6);
        expect(Array.from(blocked[r]!.res.sampledIndex)).toEqual(Array.from(one[r]!.res.sampledIndex));
        expect(maxAbsDiff(one[r]!.pfc.getWeights(), blocked[r]!.pfc.getWeights())).toBeLessThan(1e-7);
      }
    }
  });

  it('float16 storage: exact on fp16-representable weights; within 2e-3·max|w| of float32 after 20 SGD steps', async () => {
    const p = makeProblem(30, 8, 4, 29);
    const f16 = Float64Array.from(Float32Array.from(p.weight).map((v) => Math.fround(v)));
    const { float32ToFloat16, float16ToFloat32 } = await import('@pfc/core');
    const rounded = Float64Array.from(float16ToFloat32(float32ToFloat16(f16)));
    const q = { ...p, weight: rounded };
    const a = await runStep(q, 1, { margin: ARC, storage: 'float16' });
    const b = await runStep(q, 1, { margin: ARC, storage: 'float32' });
    expect(Math.abs(a[0]!.res.loss - b[0]!.res.loss)).toBe(0);
    const train = (storage: 'float16' | 'float32') =>
      runLocal(1, async (comm) => {
        const pfc = new PartialFC({ numClasses: 30, embeddingSize: 8, margin: ARC, comm, storage, init: 'zeros' });
        pfc.setWeights(rounded);
        for (let i = 0; i < 20; i++) await pfc.forwardBackward(Float32Array.from(p.emb), p.labels, { lr: 0.001 });
        return pfc.getWeights();
      });
    const [w16] = await train('float16');
    const [w32] = await train('float32');
    const scale = Math.max(...w32!.map(Math.abs));
    // fp16 keeps 11 significant bits (relative 4.9e-4 per rounding); 20 steps of rounding stay well inside 2e-3
    expect(maxAbsDiff(w16!, w32!)).toBeLessThan(2e-3 * scale);
    expect(maxAbsDiff(w16!, w32!)).toBeGreaterThan(0);
  });

  it('the init depends on the seed and class, not on the world size', async () => {
    const weights = await Promise.all(
      [1, 3].map(async (W) => {
        const parts = await runLocal(W, async (comm) => new PartialFC({ numClasses: 10000, embeddingSize: 3, margin: ARC, comm, seed: 4 }).getWeights());
        return Float64Array.from(parts.flatMap((x) => Array.from(x)));
      }),
    );
    expect(maxAbsDiff(weights[0]!, weights[1]!)).toBe(0);
    const std = Math.sqrt(weights[0]!.reduce((a, v) => a + v * v, 0) / weights[0]!.length);
    expect(Math.abs(std - 0.01)).toBeLessThan(0.0005);
    expect(shardOf(10000, 3, 2)).toEqual({ numLocal: 3333, classStart: 6667 });
  });
});
