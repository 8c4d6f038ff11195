import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from './backend';
import { PfcError } from './errors';
import { Rng } from './rng';
import { WASM_TRAINING_KERNELS, registerWasmTrainingKernels } from './wasm-kernels';

// The wasm kernels and the cpu reference both compute in float32 but sum in different orders (XNNPACK blocks and
// vectorises, cpu loops naively). Over the ≤ 200-term sums below with N(0,1) data, rounding differences stay near
// 1e-6 × |sum| (sums reach ~30); 1e-4 absolute leaves margin for that without hiding an indexing error, which
// shows up as differences of order 1.
const TOL = 1e-4;

type Backend = 'cpu' | 'wasm';
type Shape = number[];

/** Seeded N(0,1) data of a shape, rebuilt identically as a tensor on each backend. */
function randn(shape: Shape, seed: number): { shape: Shape; data: Float32Array } {
  const rng = new Rng(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = rng.normal();
  return { shape, data };
}
const t = (a: { shape: Shape; data: Float32Array }) => tf.tensor(a.data, a.shape);

/** Runs `fn` on a backend and reads its outputs (read outside `tf.tidy`: never return a TypedArray from it). */
async function on(backend: Backend, fn: () => tf.Tensor[]): Promise<{ shape: Shape; data: Float32Array }[]> {
  await tf.setBackend(backend);
  const out = tf.tidy(fn);
  const res = out.map((x) => ({ shape: x.shape, data: x.dataSync() as Float32Array }));
  tf.dispose(out);
  return res;
}

/** Max |wasm − cpu| over all outputs, after checking the shapes agree. */
async function maxDiff(fn: () => tf.Tensor[]): Promise<number> {
  const ref = await on('cpu', fn);
  const got = await on('wasm', fn);
  expect(got.map((g) => g.shape)).toEqual(ref.map((r) => r.shape));
  let worst = 0;
  ref.forEach((r, i) => {
    const g = got[i]!.data;
    expect(g.length).toBe(r.data.length);
    for (let j = 0; j < g.length; j++) {
      const d = Math.abs(g[j]! - r.data[j]!);
      worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
    }
  });
  return worst;
}

/** Forward output and gradients of `sum(f(...args) * r)` with respect to every argument (r: random weights). */
function forwardAndGrads(f: (...xs: tf.Tensor[]) => tf.Tensor, args: tf.Tensor[], seed: number): tf.Tensor[] {
  const y = f(...args);
  const r = t(randn(y.shape, seed));
  const grads = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), r)))(args);
  return [y, ...grads];
}

beforeAll(async () => {
  await initBackend({ backend: 'cpu', log: null });
  await initBackend({ backend: 'wasm', log: null });
});

describe('registration', () => {
  it('registers every training kernel for wasm, idempotently', () => {
    const before = WASM_TRAINING_KERNELS.map((name) => tf.getKernel(name, 'wasm')?.kernelFunc);
    expect(before.every((k) => typeof k === 'function')).toBe(true);
    registerWasmTrainingKernels();
    const after = WASM_TRAINING_KERNELS.map((name) => tf.getKernel(name, 'wasm')?.kernelFunc);
    expect(after).toEqual(before);
  });

  it('registers tfjs-core’s gradients, bundled from the installed tfjs-core version', () => {
    for (const name of ['Conv2D', 'DepthwiseConv2dNative', 'FusedBatchNorm', 'Prelu', 'GatherV2', 'BatchMatMul', 'Sum']) {
      expect(tf.getGradient(name)).toBeDefined();
    }
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const bundled = require('./wasm/tfjs-gradients.cjs') as { TFJS_CORE_VERSION: string };
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    expect(bundled.TFJS_CORE_VERSION).toBe((require('@tensorflow/tfjs-core/package.json') as { version: string }).version);
  });

  it('registers the chained tensor methods some gradients call (x.reshape(), x.split())', async () => {
    await tf.setBackend('wasm');
    const s = tf.tidy(() => (tf.ones([2, 3]) as unknown as { reshape(shape: number[]): { sum(): tf.Tensor } }).reshape([3, 2]).sum());
    expect(s.dataSync()[0]).toBe(6);
    s.dispose();
    // gather with batchDims 1 and prod: their gradients use chained methods.
    const table = randn([2, 5, 3], 36);
    const diff = await maxDiff(() => [
      ...forwardAndGrads((x) => tf.gather(x!, tf.tensor2d([4, 0, 4, 1, 2, 2], [2, 3], 'int32'), 1, 1), [t(table)], 37),
      ...forwardAndGrads((x) => tf.prod(x!, 1), [t(randn([3, 4], 38))], 39),
    ]);
    expect(diff).toBeLessThan(TOL);
  });
});

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];

describe('conv2d gradients match the cpu backend', () => {
  const cases: { x: Shape; f: Shape; strides: number | [number, number]; pad: Pad; dimRoundingMode?: 'floor' | 'ceil' }[] = [];
  for (const strides of [1, 2]) for (const pad of ['same', 'valid'] as const) cases.push({ x: [2, 7, 9, 3], f: [3, 3, 3, 4], strides, pad });
  cases.push({ x: [1, 8, 6, 2], f: [2, 3, 2, 3], strides: 2, pad: 'same' }); // even input, even filter side
  cases.push({ x: [2, 9, 7, 3], f: [1, 1, 3, 5], strides: 2, pad: 'valid' }); // 1×1 projection shortcut
  cases.push({ x: [1, 11, 10, 2], f: [5, 5, 2, 2], strides: [3, 2], pad: 'valid' }); // unused trailing rows
  cases.push({ x: [2, 7, 7, 2], f: [3, 3, 2, 3], strides: 2, pad: 1 });
  cases.push({ x: [1, 7, 8, 2], f: [3, 2, 2, 2], strides: 2, pad: [[0, 0], [2, 0], [0, 3], [0, 0]] }); // pad beyond the filter
  for (const strides of [1, 2]) cases.push({ x: [2, 6, 7, 3], f: [2, 2, 3, 2], strides, pad: [[0, 0], [3, 1], [2, 4], [0, 0]] }); // rows read only as padding
  cases.push({ x: [1, 8, 8, 2], f: [3, 3, 2, 2], strides: 2, pad: 1, dimRoundingMode: 'floor' });
  it.each(cases)('x $x filter $f strides $strides pad $pad $dimRoundingMode', async ({ x, f, strides, pad, dimRoundingMode }) => {
    const xs = randn(x, 1);
    const fs = randn(f, 2);
    const diff = await maxDiff(() =>
      forwardAndGrads((a, b) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, strides, pad, 'NHWC', 1, dimRoundingMode), [t(xs), t(fs)], 3),
    );
    expect(diff).toBeLessThan(TOL);
  });

  // tfjs's conv2d gradient drops dimRoundingMode; with 'ceil' the cpu gradient kernels then ignore dy's last row and
  // column, and the wasm forward conv leaves that row unwritten (XNNPACK sizes its output from the pads itself). So the
  // wasm gradients are checked with the adjoint identities <dx, x> = <dw, w> = <dy, conv(x, w)>, the forward from the
  // cpu backend (sums of ~100 terms of size ~10: 1e-3 absolute).
  it("dimRoundingMode 'ceil': the gradients use the rounding that produced dy", async () => {
    const xs = randn([1, 8, 8, 2], 17);
    const fs = randn([3, 3, 2, 2], 18);
    const dys = randn([1, 5, 5, 2], 19); // ceil((8 + 2 - 3) / 2) + 1 rows, where floor gives 4
    const conv = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 1, 'NHWC', 1, 'ceil');
    const forward = (await on('cpu', () => [tf.sum(tf.mul(conv(t(xs), t(fs)), t(dys)))]))[0]!.data[0]!;
    const [viaInput, viaFilter] = (
      await on('wasm', () => {
        const [x, f] = [t(xs), t(fs)];
        const [dx, df] = tf.grads((a, b) => tf.sum(tf.mul(conv(a!, b!), t(dys))))([x, f]);
        return [tf.sum(tf.mul(dx!, x)), tf.sum(tf.mul(df!, f))];
      })
    ).map((r) => r.data[0]!);
    expect(Math.abs(viaInput! - forward!)).toBeLessThan(1e-3);
    expect(Math.abs(viaFilter! - forward!)).toBeLessThan(1e-3);
    expect(Math.abs(forward!)).toBeGreaterThan(1);
  });

  it('conv2dTranspose (a forward Conv2DBackpropInput) and its gradients', async () => {
    const xs = randn([2, 4, 5, 3], 4);
    const fs = randn([3, 3, 2, 3], 5);
    const diff = await maxDiff(() =>
      forwardAndGrads((a, b) => tf.conv2dTranspose(a as tf.Tensor4D, b as tf.Tensor4D, [2, 8, 10, 2], 2, 'same'), [t(xs), t(fs)], 6),
    );
    expect(diff).toBeLessThan(TOL);
  });
});

describe('depthwise conv2d gradients match the cpu backend', () => {
  const cases: { x: Shape; f: Shape; strides: number; pad: Pad }[] = [];
  for (const strides of [1, 2]) for (const pad of ['same', 'valid'] as const) for (const m of [1, 2]) cases.push({ x: [2, 7, 9, 3], f: [3, 3, 3, m], strides, pad });
  cases.push({ x: [1, 8, 7, 4], f: [5, 5, 4, 1], strides: 2, pad: 'same' });
  cases.push({ x: [2, 7, 7, 2], f: [3, 3, 2, 3], strides: 2, pad: 1 });
  it.each(cases)('x $x filter $f strides $strides pad $pad', async ({ x, f, strides, pad }) => {
    const xs = randn(x, 11);
    const fs = randn(f, 12);
    const diff = await maxDiff(() =>
      forwardAndGrads((a, b) => tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, strides, pad), [t(xs), t(fs)], 13),
    );
    expect(diff).toBeLessThan(TOL);
  });

  // tfjs's own gradients never pass dilations (they assert them to be 1) and the cpu backprop kernels ignore them, so
  // dilated calls are checked with the adjoint identities <dx, x> = <dy, conv(x, w)> = <dw, w>, exact up to rounding
  // of the ~400-term sums (values ~30): 1e-3 absolute.
  it.each([1, 2])('dilated depthwise kernels satisfy the adjoint identities (multiplier %i)', async (m) => {
    await tf.setBackend('wasm');
    const xs = randn([2, 9, 8, 3], 14);
    const dys = randn([2, 9, 8, 3 * m], 15);
    const fs = randn([3, 3, 3, m], 16);
    const attrs = { strides: 1, pad: 'same', dilations: [2, 2] };
    const [viaInput, viaFilter, forward] = tf.tidy(() => {
      const x = t(xs) as tf.Tensor4D;
      const dy = t(dys);
      const f = t(fs) as tf.Tensor4D;
      const dx = tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy, filter: f }, { ...attrs, inputShape: x.shape }) as tf.Tensor;
      const df = tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x, dy }, { ...attrs, filterShape: f.shape }) as tf.Tensor;
      const y = tf.depthwiseConv2d(x, f, 1, 'same', 'NHWC', 2);
      return [tf.sum(tf.mul(dx, x)), tf.sum(tf.mul(df, f)), tf.sum(tf.mul(y, dy))];
    });
    const [a, b, c] = [viaInput!, viaFilter!, forward!].map((v) => v.dataSync()[0]!);
    tf.dispose([viaInput!, viaFilter!, forward!]);
    expect(Math.abs(a! - c!)).toBeLessThan(1e-3);
    expect(Math.abs(b! - c!)).toBeLessThan(1e-3);
    expect(Math.abs(c!)).toBeGreaterThan(1); // a non-trivial sum
  });
});

describe('batch norm and prelu forward + backward match the cpu backend', () => {
  const xs = randn([4, 5, 5, 6], 21);
  const gs = randn([6], 22);
  const bs = randn([6], 23);
  const eps = 1e-3;

  it('tf.batchNorm with given mean and variance', async () => {
    const ms = randn([6], 24);
    const vs = { shape: [6], data: randn([6], 25).data.map((v) => 0.5 + v * v) };
    const diff = await maxDiff(() =>
      forwardAndGrads((x, m, v, b, g) => tf.batchNorm(x as tf.Tensor4D, m!, v!, b, g, eps), [t(xs), t(ms), t(vs), t(bs), t(gs)], 26),
    );
    expect(diff).toBeLessThan(TOL);
  });

  it('tf.batchNorm with batch moments (training mode)', async () => {
    const diff = await maxDiff(() =>
      forwardAndGrads(
        (x, b, g) => {
          const { mean, variance } = tf.moments(x!, [0, 1, 2]);
          return tf.batchNorm(x as tf.Tensor4D, mean, variance, b, g, eps);
        },
        [t(xs), t(bs), t(gs)],
        27,
      ),
    );
    expect(diff).toBeLessThan(TOL);
  });

  it('batch norm written from moments and primitive ops', async () => {
    const diff = await maxDiff(() =>
      forwardAndGrads(
        (x, b, g) => {
          const { mean, variance } = tf.moments(x!, [0, 1, 2], true);
          return tf.add(tf.mul(tf.mul(tf.sub(x!, mean), tf.rsqrt(tf.add(variance, eps))), g!), b!);
        },
        [t(xs), t(bs), t(gs)],
        28,
      ),
    );
    expect(diff).toBeLessThan(TOL);
  });

  it('prelu', async () => {
    const alpha = randn([6], 29);
    const diff = await maxDiff(() => forwardAndGrads((x, a) => tf.prelu(x!, a!), [t(xs), t(alpha)], 30));
    expect(diff).toBeLessThan(TOL);
  });
});

describe('gather gradient (UnsortedSegmentSum) matches the cpu backend', () => {
  it('axis 0 with repeated indices', async () => {
    const table = randn([10, 4], 31);
    const idx = [7, 2, 7, 0, 9, 2, 7];
    const diff = await maxDiff(() => forwardAndGrads((x) => tf.gather(x!, tf.tensor1d(idx, 'int32'), 0), [t(table)], 32));
    expect(diff).toBeLessThan(TOL);
  });

  it('axis 1 with a 2-D index tensor', async () => {
    const table = randn([3, 8, 2], 33);
    const idx = tf.tensor2d([5, 1, 5, 7, 0, 1], [2, 3], 'int32');
    const idxData = idx.dataSync();
    idx.dispose();
    const diff = await maxDiff(() => forwardAndGrads((x) => tf.gather(x!, tf.tensor2d(idxData, [2, 3], 'int32'), 1), [t(table)], 34));
    expect(diff).toBeLessThan(TOL);
  });

  // tfjs-backend-wasm 4.22's native GatherV2 reads rows of the wrong batch with batchDims > 0; @pfc replaces it then.
  it.each([
    { x: [2, 5, 3], idx: [2, 4], axis: 1, batchDims: 1 },
    { x: [2, 3, 6, 2], idx: [2, 3], axis: 2, batchDims: 1 },
    { x: [2, 3, 6, 2], idx: [2, 3, 4], axis: 2, batchDims: 2 },
  ])('batched gather x $x indices $idx axis $axis batchDims $batchDims', async ({ x, idx, axis, batchDims }) => {
    const table = randn(x, 40);
    const rng = new Rng(41);
    const dim = x[axis]!;
    const ids = Int32Array.from({ length: idx.reduce((a, b) => a * b, 1) }, () => rng.int(dim));
    const gather = (v: tf.Tensor) => tf.gather(v, tf.tensor(ids, idx, 'int32'), axis, batchDims);
    // tfjs differentiates batched gathers only for batchDims 1 (on every backend).
    const diff = await maxDiff(() => (batchDims === 1 ? forwardAndGrads((v) => gather(v!), [t(table)], 42) : [gather(t(table))]));
    expect(diff).toBeLessThan(TOL);
  });

  it('a batched gather index outside the axis is E_WASM_KERNEL', async () => {
    await tf.setBackend('wasm');
    const x = tf.zeros([2, 5, 3]);
    const idx = tf.tensor2d([0, 5], [2, 1], 'int32');
    expect(() => tf.gather(x, idx, 1, 1)).toThrow('GatherV2: the index value 5 is not in [0, 4]');
    tf.dispose([x, idx]);
  });

  it('drops segment ids outside [0, numSegments) like the cpu backend', async () => {
    const x = randn([6, 3], 35);
    const ids = [1, -1, 3, 5, 1, 0];
    const diff = await maxDiff(() => [tf.unsortedSegmentSum(t(x), tf.tensor1d(ids, 'int32'), 4)]);
    expect(diff).toBeLessThan(TOL);
    await tf.setBackend('wasm');
    const none = tf.unsortedSegmentSum(t(x), tf.tensor1d([-1, 9, 4, 4, -2, 7], 'int32'), 4);
    expect(none.shape).toEqual([4, 3]);
    expect(Array.from(none.dataSync())).toEqual(new Array(12).fill(0));
    none.dispose();
  });
});

describe('matMul with transpose flags matches the cpu backend', () => {
  const combos = [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ] as const;
  // [M, K, N]: square-ish, and one where B is much larger than A so the swapped plan runs.
  const sizes = [
    [5, 7, 3],
    [4, 8, 96],
    [96, 8, 4],
  ] as const;
  const cases = combos.flatMap(([ta, tb]) => sizes.map(([m, k, n]) => ({ ta, tb, m, k, n })));
  it.each(cases)('transposeA $ta transposeB $tb, M $m K $k N $n, forward and gradients', async ({ ta, tb, m, k, n }) => {
    const a = randn(ta ? [k, m] : [m, k], 41);
    const b = randn(tb ? [n, k] : [k, n], 42);
    const diff = await maxDiff(() => forwardAndGrads((x, y) => tf.matMul(x!, y!, ta, tb), [t(a), t(b)], 43));
    expect(diff).toBeLessThan(TOL);
  });

  it.each(combos)('batched (broadcast batch) transposeA %s transposeB %s', async (ta, tb) => {
    const a = randn(ta ? [3, 6, 5] : [3, 5, 6], 44);
    const b = randn(tb ? [1, 4, 6] : [1, 6, 4], 45);
    const diff = await maxDiff(() => [tf.matMul(t(a), t(b), ta, tb)]);
    expect(diff).toBeLessThan(TOL);
  });

  it.each(combos)('fused matMul with bias and relu, transposeA %s transposeB %s', async (ta, tb) => {
    const a = randn(ta ? [6, 5] : [5, 6], 46);
    const b = randn(tb ? [7, 6] : [6, 7], 47);
    const bias = randn([7], 48);
    const diff = await maxDiff(() => [tf.fused.matMul({ a: t(a), b: t(b), transposeA: ta, transposeB: tb, bias: t(bias), activation: 'relu' })]);
    expect(diff).toBeLessThan(TOL);
  });
});

describe('memory', () => {
  it('leaves the caller’s inputs alive and their reference counts unchanged', async () => {
    await tf.setBackend('wasm');
    const x = t(randn([1, 5, 5, 2], 51));
    const dy = t(randn([1, 5, 5, 3], 52));
    const backend = tf.backend();
    const refs = [backend.refCount(x.dataId), backend.refCount(dy.dataId)];
    const dw = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 2, 3] }) as tf.Tensor;
    expect([backend.refCount(x.dataId), backend.refCount(dy.dataId)]).toEqual(refs);
    expect(x.dataSync().length).toBe(50);
    tf.dispose([x, dy, dw]);
  });

  it('numTensors and wasm data ids do not grow across repeated gradient steps', async () => {
    await tf.setBackend('wasm');
    const w1 = tf.variable(t(randn([3, 3, 3, 4], 53)));
    const dw = tf.variable(t(randn([3, 3, 4, 2], 54)));
    const emb = tf.variable(t(randn([10, 8], 55)));
    const fc = tf.variable(t(randn([12, 8], 56)));
    const alpha = tf.variable(tf.fill([4], 0.25));
    const gamma = tf.variable(tf.ones([4]));
    const beta = tf.variable(tf.zeros([4]));
    const x = t(randn([6, 8, 8, 3], 57));
    const labels = tf.tensor1d([1, 4, 9, 4, 0, 2], 'int32');
    const step = () => {
      const { value, grads } = tf.variableGrads(() => {
        let h: tf.Tensor4D = tf.conv2d(x as tf.Tensor4D, w1 as tf.Tensor4D, 2, 'same');
        const { mean, variance } = tf.moments(h, [0, 1, 2]);
        h = tf.prelu(tf.batchNorm(h, mean, variance, beta, gamma, 1e-3), alpha) as tf.Tensor4D;
        h = tf.depthwiseConv2d(h, dw as tf.Tensor4D, 2, 'valid');
        const feat = tf.reshape(h, [6, 8]);
        const e = tf.gather(emb, labels);
        const logits = tf.matMul(tf.add(feat, e), fc, false, true);
        return tf.mean(tf.square(logits));
      });
      tf.dispose([value, ...Object.values(grads)]);
    };
    step();
    const backend = tf.backend();
    const tensors = tf.memory().numTensors;
    const ids = backend.numDataIds();
    for (let i = 0; i < 3; i++) step();
    expect(tf.memory().numTensors).toBe(tensors);
    expect(backend.numDataIds()).toBe(ids);
    tf.dispose([w1, dw, emb, fc, alpha, gamma, beta, x, labels]);
  });
});

describe('errors', () => {
  it('a tfjs-core other than the bundled gradients’ version is E_TFJS_VERSION naming both', () => {
    jest.isolateModules(() => {
      jest.doMock('@tensorflow/tfjs-core', () => ({ ...jest.requireActual<object>('@tensorflow/tfjs-core'), version_core: '4.0.0' }));
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const isolated = require('./wasm-kernels') as typeof import('./wasm-kernels');
      expect(() => isolated.registerWasmTrainingKernels()).toThrow(
        expect.objectContaining({
          code: 'E_TFJS_VERSION',
          message: '@pfc/core bundles the gradients of @tensorflow/tfjs-core 4.22.0 but 4.0.0 is loaded; install exactly 4.22.0',
        }),
      );
    });
    jest.dontMock('@tensorflow/tfjs-core');
  });

  it('a dy that does not match the forward output shape is E_WASM_KERNEL naming both shapes', async () => {
    await tf.setBackend('wasm');
    const x = tf.zeros([1, 5, 5, 2]);
    const dy = tf.zeros([1, 4, 5, 3]);
    const run = () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 2, 3] });
    expect(run).toThrow(PfcError);
    expect(run).toThrow("Conv2DBackpropFilter: dy has shape [1, 4, 5, 3]; the forward convolution's output shape is [1, 5, 5, 3]");
    tf.dispose([x, dy]);
  });

  it('NCHW is E_WASM_KERNEL', async () => {
    await tf.setBackend('wasm');
    const dy = tf.zeros([1, 3, 5, 5]);
    const f = tf.zeros([3, 3, 2, 3]);
    expect(() =>
      tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: f }, { strides: 1, pad: 'same', dataFormat: 'NCHW', inputShape: [1, 2, 5, 5] }),
    ).toThrow(expect.objectContaining({ code: 'E_WASM_KERNEL' }));
    tf.dispose([dy, f]);
  });
});
