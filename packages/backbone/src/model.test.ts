import * as tf from '@tensorflow/tfjs-core';
import { PfcError, Rng, initBackend } from '@pfc/core';
import { Backbone, backwardFromEmbeddings, batchNormTrain, createBackbone, BN_EPS } from './model';
import { describeArch, resolveConfig } from './arch';

const TINY = { name: 'iresnet' as const, layers: [1, 1, 1, 1], widths: [4, 6, 8, 8], embeddingSize: 8, inputSize: 16 };

function randn(shape: number[], seed: number, scale = 1): tf.Tensor {
  const rng = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(Float32Array.from({ length: n }, () => rng.normal(0, scale)), shape);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

beforeAll(async () => {
  await initBackend({ backend: 'cpu', log: null });
});

describe('BatchNorm semantics', () => {
  it('training mode normalises with batch statistics (biased variance), closed form', () => {
    const x = randn([3, 2, 2, 5], 1, 2);
    const gamma = tf.tensor1d([1, 2, 0.5, -1, 3]);
    const beta = tf.tensor1d([0, 1, -1, 0.5, 2]);
    const { y, mean, variance } = batchNormTrain(x, gamma, beta);
    const xs = x.dataSync();
    const ys = y.dataSync();
    const g = gamma.dataSync();
    const b = beta.dataSync();
    const m = new Float64Array(5);
    const v = new Float64Array(5);
    for (let i = 0; i < xs.length; i++) m[i % 5]! += xs[i]! / 12;
    for (let i = 0; i < xs.length; i++) v[i % 5]! += (xs[i]! - m[i % 5]!) ** 2 / 12;
    const expected = Array.from(xs, (xv, i) => ((xv - m[i % 5]!) / Math.sqrt(v[i % 5]! + BN_EPS)) * g[i % 5]! + b[i % 5]!);
    expect(maxAbsDiff(ys, expected)).toBeLessThan(1e-5);
    expect(maxAbsDiff(mean.dataSync(), m)).toBeLessThan(1e-6);
    expect(maxAbsDiff(variance.dataSync(), v)).toBeLessThan(1e-5);
    tf.dispose([x, gamma, beta, y, mean, variance]);
  });

  it('closed-form backward equals autodiff of the primitive-op BatchNorm', () => {
    const x = randn([4, 3, 3, 6], 2);
    const gamma = randn([6], 3);
    const beta = randn([6], 4);
    const dy = randn([4, 3, 3, 6], 5);
    const ours = tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      const r = batchNormTrain(a, g, b);
      r.mean.dispose();
      r.variance.dispose();
      return tf.sum(tf.mul(r.y, dy));
    })([x, gamma, beta]);
    const plain = tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      const m = tf.mean(a, [0, 1, 2]);
      const v = tf.mean(tf.square(tf.sub(a, m)), [0, 1, 2]);
      return tf.sum(tf.mul(tf.add(tf.mul(tf.div(tf.sub(a, m), tf.sqrt(tf.add(v, BN_EPS))), g), b), dy));
    })([x, gamma, beta]);
    for (let i = 0; i < 3; i++) expect(maxAbsDiff(ours[i]!.dataSync(), plain[i]!.dataSync())).toBeLessThan(1e-4); // float32 sums over 36 values of O(1)
    tf.dispose([x, gamma, beta, dy, ...ours, ...plain]);
  });

  it('updates running statistics with momentum 0.1 and unbiased variance; inference uses them', () => {
    const model = createBackbone(TINY, { seed: 3 });
    const x = randn([4, 16, 16, 3], 6, 0.5);
    // The stem BN sees conv1(x); compute its batch statistics independently.
    const c = tf.conv2d(x as tf.Tensor4D, model.variable('conv1.weight') as tf.Tensor4D, 1, 1, 'NHWC', 1, 'floor');
    const { mean, variance } = tf.moments(c, [0, 1, 2]);
    const n = 4 * 16 * 16;
    tf.dispose(model.apply(x, { training: true }));
    const rm = model.variable('bn1.running_mean').dataSync();
    const rv = model.variable('bn1.running_var').dataSync();
    const m = mean.dataSync();
    const v = variance.dataSync();
    expect(maxAbsDiff(rm, Array.from(m, (q) => 0.1 * q))).toBeLessThan(1e-6);
    expect(maxAbsDiff(rv, Array.from(v, (q) => 0.9 + 0.1 * q * (n / (n - 1))))).toBeLessThan(1e-5);
    const sd = model.getStateDict();
    expect(sd.get('bn1.num_batches_tracked')!.data[0]).toBe(1n);
    expect(sd.get('features.num_batches_tracked')!.data[0]).toBe(1n);
    // Inference-mode stem BN: (c - rm) / sqrt(rv + eps) * 1 + 0, checked through the stem's PReLU-free part.
    const { y } = tf.tidy(() => ({ y: tf.add(tf.mul(tf.sub(c, tf.tensor1d(rm)), tf.rsqrt(tf.add(tf.tensor1d(rv), BN_EPS))), 0) }));
    const ours = tf.tidy(() => {
      const scale = tf.rsqrt(tf.add(model.variable('bn1.running_var'), BN_EPS));
      return tf.mul(tf.sub(c, model.variable('bn1.running_mean')), scale);
    });
    expect(maxAbsDiff(ours.dataSync(), y.dataSync())).toBeLessThan(1e-5);
    // Inference is deterministic and does not touch the buffers.
    const e1 = model.apply(x);
    const e2 = model.apply(x);
    expect(maxAbsDiff(e1.dataSync(), e2.dataSync())).toBe(0);
    expect(model.getStateDict().get('bn1.num_batches_tracked')!.data[0]).toBe(1n);
    tf.dispose([x, c, mean, variance, y, ours, e1, e2]);
    model.dispose();
  });

  it('training and inference differ exactly by the statistics used (features BN closed form)', () => {
    // With fresh buffers (mean 0, var 1), inference features-BN is y = x/sqrt(1+eps) + bias; training normalises per batch.
    const model = createBackbone(TINY, { seed: 4 });
    const x = randn([5, 16, 16, 3], 7, 0.5);
    const train = model.apply(x, { training: true });
    const t = train.dataSync();
    // Training output has zero batch mean and unit (biased) variance per feature (weight 1, bias 0).
    for (let f = 0; f < 8; f++) {
      let m = 0;
      let v = 0;
      for (let i = 0; i < 5; i++) m += t[i * 8 + f]! / 5;
      for (let i = 0; i < 5; i++) v += (t[i * 8 + f]! - m) ** 2 / 5;
      expect(Math.abs(m)).toBeLessThan(1e-5);
      expect(Math.abs(v - 1)).toBeLessThan(1e-3); // v/(v+eps) with a small batch variance of the FC output
    }
    tf.dispose([x, train]);
    model.dispose();
  });
});

describe('Backbone', () => {
  it('produces [N, embeddingSize] and rejects wrong sizes and channels with E_SHAPE naming the expected shape', () => {
    const model = createBackbone(TINY);
    const x = tf.zeros([2, 16, 16, 3]);
    const y = model.apply(x);
    expect(y.shape).toEqual([2, 8]);
    for (const bad of [[2, 17, 16, 3], [2, 16, 16, 1], [16, 16, 3]]) {
      const t = tf.zeros(bad);
      expect(() => model.apply(t)).toThrow(/\[N, 16, 16, 3\]/);
      try {
        model.apply(t);
      } catch (err) {
        expect(PfcError.is(err, 'E_SHAPE')).toBe(true);
      }
      t.dispose();
    }
    const one = tf.zeros([1, 16, 16, 3]);
    expect(() => model.apply(one, { training: true })).toThrow(PfcError);
    tf.dispose([x, y, one]);
    model.dispose();
    expect(() => model.apply(tf.zeros([2, 16, 16, 3]))).toThrow(/disposed/);
  });

  it('exposes trainable variables by state-dict name, without the frozen features.weight or buffers', () => {
    const model = createBackbone(TINY);
    const names = model.trainableVariables.map((v) => v.name);
    expect(names).toContain('layer1.0.downsample.0.weight');
    expect(names).toContain('features.bias');
    expect(names).not.toContain('features.weight');
    expect(names.some((n) => n.includes('running'))).toBe(false);
    expect(model.getStateDict().get('features.weight')!.data).toEqual(new Float32Array(8).fill(1));
    model.dispose();
  });

  it('initialises as the reference: conv N(0, 0.1), PReLU 0.25, FC U(±1/sqrt(fan_in))', () => {
    const model = createBackbone({ ...TINY, widths: [16, 16, 16, 16] }, { seed: 9 });
    const sd = model.getStateDict();
    const w = sd.get('layer2.0.conv1.weight')!.data as Float32Array;
    const mean = w.reduce((a, b) => a + b, 0) / w.length;
    const std = Math.sqrt(w.reduce((a, b) => a + (b - mean) ** 2, 0) / w.length);
    expect(Math.abs(std - 0.1)).toBeLessThan(0.01); // 2304 samples: std error ~0.0015
    expect(sd.get('prelu.weight')!.data).toEqual(new Float32Array(16).fill(0.25));
    const fc = sd.get('fc.weight')!.data as Float32Array;
    const bound = 1 / Math.sqrt(16);
    expect(Math.max(...fc.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...fc.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    model.dispose();
  });

  it('initialises MobileFaceNet as the reference: conv and linear Kaiming-normal (fan_out, relu), BN 1/0, PReLU 0.25, no FC bias', () => {
    // mobilefacenet.py `_initialize_weights`: kaiming_normal_(mode='fan_out', nonlinearity='relu') on every Conv2d and
    // Linear, so std = sqrt(2 / fan_out) with PyTorch's fan_out = size(0) · k · k: out channels times the kernel area,
    // not divided by groups (depthwise and grouped convs included) and out_features for the Linear.
    const model = createBackbone('mbf', { seed: 31 });
    const sd = model.getStateDict();
    const params = describeArch(resolveConfig('mbf')).params;
    const weights = params.filter((p) => p.kind === 'conv' || p.kind === 'linear.weight');
    expect(weights.length).toBe(weights.filter((p) => p.kind === 'conv').length + 1);
    const kinds = new Set<string>();
    let pooled = 0;
    let pooledSq = 0;
    let within = 0;
    for (const p of weights) {
      const w = sd.get(p.name)!.data as Float32Array;
      const fanOut = p.shape[0]! * (p.shape[2] ?? 1) * (p.shape[3] ?? 1);
      const sigma = Math.sqrt(2 / fanOut);
      const n = w.length;
      const mean = w.reduce((a, b) => a + b, 0) / n;
      const std = Math.sqrt(w.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
      // Six standard errors (the std's is sigma/sqrt(2n), the mean's sigma/sqrt(n)); the smallest layer has n = 1152.
      expect(Math.abs(std / sigma - 1)).toBeLessThan(6 / Math.sqrt(2 * n));
      expect(Math.abs(mean)).toBeLessThan((6 * sigma) / Math.sqrt(n));
      for (const v of w) {
        pooled += v / sigma;
        pooledSq += (v / sigma) ** 2;
        if (Math.abs(v) < sigma) within++;
      }
      kinds.add(p.kind === 'linear.weight' ? 'linear' : p.shape[1] === 1 ? `depthwise ${p.shape[2]}x${p.shape[3]}` : p.shape[1] === 2 ? 'grouped' : `${p.shape[2]}x${p.shape[3]}`);
    }
    expect([...kinds].sort()).toEqual(['1x1', '3x3', 'depthwise 3x3', 'depthwise 7x7', 'grouped', 'linear']);
    // Pooled over all ~2 M weights standardised by their layer's sigma: a normal law (68.27 % within one sigma; a
    // uniform of the same std, PyTorch's default Linear/Conv family, has 57.7 %), mean 0 and variance 1.
    const total = weights.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
    expect(total).toBeGreaterThan(1.9e6);
    expect(Math.abs(within / total - 0.6827)).toBeLessThan(0.003); // standard error 0.0003
    expect(Math.abs(pooled / total)).toBeLessThan(0.005); // standard error 0.0007
    expect(Math.abs(pooledSq / total - 1)).toBeLessThan(0.005); // standard error 0.001
    for (const p of params) {
      const d = sd.get(p.name)!.data as Float32Array;
      if (p.kind === 'bn.weight' || p.kind === 'bn.running_var') expect(d.every((v) => v === 1)).toBe(true);
      if (p.kind === 'bn.bias' || p.kind === 'bn.running_mean') expect(d.every((v) => v === 0)).toBe(true);
      if (p.kind === 'prelu') expect(d.every((v) => v === 0.25)).toBe(true);
    }
    expect(params.some((p) => p.kind === 'bn.frozen_weight' || p.kind === 'linear.bias')).toBe(false);
    expect(sd.has('features.layers.2.bias')).toBe(false);
    // The features BatchNorm1d's affine weight is trainable in mbf (frozen only in iResNet).
    expect(model.trainableVariables.map((v) => v.name)).toContain('features.layers.3.weight');
    model.dispose();
  });

  it('gradients from dEmb match central finite differences of sum(emb·dEmb) (a few weights per layer kind)', () => {
    const model = createBackbone(TINY, { seed: 11 });
    const x = randn([3, 16, 16, 3], 12, 0.5);
    const dEmb = randn([3, 8], 13);
    // Finite differences need the same batch statistics: measure in training mode, restoring buffers is not needed
    // because training-mode outputs do not depend on them.
    const grads = backwardFromEmbeddings(model, x, dEmb);
    const f = () => tf.tidy(() => tf.sum(tf.mul(model.apply(x, { training: true }), dEmb)).dataSync()[0]!);
    // conv1 is left out: a step there moves many PReLU inputs across the kink, which finite differences cannot follow.
    for (const name of ['layer2.0.downsample.0.weight', 'layer3.0.conv2.weight', 'layer1.0.prelu.weight', 'fc.weight', 'layer4.0.bn1.weight', 'features.bias']) {
      const v = model.variable(name);
      const g = grads.get(name)!.dataSync();
      const base = v.dataSync().slice();
      for (const idx of [0, Math.floor(base.length / 2)]) {
        const h = 1e-3;
        const plus = base.slice();
        plus[idx]! += h;
        v.assign(tf.tensor(plus, v.shape));
        const fp = f();
        const minus = base.slice();
        minus[idx]! -= h;
        v.assign(tf.tensor(minus, v.shape));
        const fm = f();
        v.assign(tf.tensor(base, v.shape));
        // float32 forward (sum of O(10), eps 1e-6 → ~1e-3 noise at h = 1e-3) plus curvature: tolerance 1e-2·max(1, |g|).
        expect(Math.abs((fp - fm) / (2 * h) - g[idx]!)).toBeLessThan(1e-2 * Math.max(1, Math.abs(g[idx]!)));
      }
    }
    tf.dispose([x, dEmb, ...grads.values()]);
    model.dispose();
  });

  it('keeps tf.memory().numTensors constant over training steps', () => {
    const model = createBackbone({ ...TINY, dropout: 0.2 });
    const x = randn([2, 16, 16, 3], 14);
    const dEmb = randn([2, 8], 15);
    const step = () => {
      const grads = backwardFromEmbeddings(model, x, dEmb);
      for (const { name, variable } of model.trainableVariables) {
        tf.tidy(() => variable.assign(tf.sub(variable, tf.mul(grads.get(name)!, 0.01))));
      }
      tf.dispose([...grads.values()]);
    };
    step();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) step();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, dEmb]);
    model.dispose();
  });

  it('frees activations during inference as soon as their consumers have run', () => {
    const model = createBackbone({ ...TINY, layers: [2, 2, 2, 2], inputSize: 32 });
    const x = tf.zeros([4, 32, 32, 3]);
    // Peak bytes sampled after every kernel (tf.profile's peak did not separate the two modes here).
    const engine = tf.engine() as unknown as { runKernelFunc: (p: unknown) => unknown; state: { numBytes: number } };
    const original = engine.runKernelFunc;
    let peak = 0;
    engine.runKernelFunc = function (this: unknown, p: unknown) {
      const r = original.call(engine, p);
      peak = Math.max(peak, engine.state.numBytes);
      return r;
    };
    const peakOf = (f: () => tf.Tensor) => {
      peak = 0;
      const t = f();
      return { t, bytes: peak };
    };
    const before = tf.memory().numTensors;
    const base = tf.memory().numBytes;
    let infer: { t: tf.Tensor; bytes: number };
    let train: { t: tf.Tensor; bytes: number };
    try {
      infer = peakOf(() => model.apply(x));
      // Deterministic: a second inference (before the training forward moves the running statistics) is identical.
      const again = model.apply(x);
      expect(maxAbsDiff(infer.t.dataSync(), again.dataSync())).toBe(0);
      again.dispose();
      train = peakOf(() => model.apply(x, { training: true }));
    } finally {
      engine.runKernelFunc = original;
    }
    expect(tf.memory().numTensors).toBe(before + 2);
    // A training forward holds every activation (for the backward pass); inference only a few at a time plus the
    // convolution's own scratch (measured 0.33 of the training peak for this 8-block network; the gap grows with depth).
    expect(infer.bytes - base).toBeLessThan(0.5 * (train.bytes - base));
    tf.dispose([x, infer.t, train.t]);
    model.dispose();
  });

  it('rejects unknown networks and bad configs with the valid choices', () => {
    expect(() => resolveConfig('r42')).toThrow(/r18, r34, r50, r100, r200, mbf/);
    expect(() => resolveConfig({ name: 'iresnet', layers: [1, 1, 1] })).toThrow(/layers/);
    expect(() => createBackbone({ name: 'iresnet', layers: [1, 1, 1, 1], inputSize: 8 })).toThrow(/inputSize/);
    expect(new Backbone(resolveConfig({ name: 'iresnet', layers: [1, 1, 1, 1], widths: [4, 4, 4, 4], inputSize: 56 })).summary.headShape).toEqual([4, 4, 4]);
  });
});
