/**
 * GFLOP/s of the training kernels @pfc registers for the wasm backend against the kernel they replace: the native
 * tfjs wasm kernel where wasm has one (slow `Conv2DBackpropInput`, `BatchMatMul` with transpose flags), else the cpu
 * backend (wasm has no `Conv2DBackpropFilter`, depthwise backprop, `UnsortedSegmentSum`). The forward conv row is the
 * ceiling the conv gradients are built on. `--quick` uses smaller shapes; `--threads N` runs wasm with N threads.
 */
import { availableParallelism, loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, KernelConfig, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { Rng, initBackend } from '@pfc/core';
import { timeMs, writeReport } from './report';
import type { Row } from './report';

type Inputs = Record<string, { shape: number[]; dtype?: 'float32' | 'int32'; data?: Int32Array }>;

interface Case {
  work: string;
  kernel: string;
  inputs: Inputs;
  attrs: NamedAttrMap;
  flops: number;
  /** Baseline: the native wasm kernel captured before @pfc replaced it, or the cpu backend. */
  baseline: 'native wasm' | 'cpu' | 'none';
}

const rng = new Rng(7);
function make(spec: Inputs[string]): tf.Tensor {
  if (spec.data) return tf.tensor(spec.data, spec.shape, 'int32');
  const size = spec.shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = rng.normal();
  return tf.tensor(data, spec.shape, spec.dtype ?? 'float32');
}

function convFlops(n: number, oh: number, ow: number, co: number, fh: number, fw: number, ci: number): number {
  return 2 * n * oh * ow * co * fh * fw * ci;
}

function cases(quick: boolean): Case[] {
  const big = quick ? { n: 2, h: 28 } : { n: 8, h: 56 };
  const c = 64;
  const small = { n: 2, h: 28, c: 32 }; // where the baseline is the (very slow) cpu backend
  const out: Case[] = [];
  const conv = (n: number, h: number, ci: number, co: number, s: number) => {
    const oh = Math.ceil(h / s);
    return {
      x: { shape: [n, h, h, ci] },
      f: { shape: [3, 3, ci, co] },
      dy: { shape: [n, oh, oh, co] },
      flops: convFlops(n, oh, oh, co, 3, 3, ci),
      attrs: { strides: s, pad: 'same', dataFormat: 'NHWC' },
      label: `conv 3×3 ${ci}→${co}, stride ${s}, batch ${n} of ${h}²`,
    };
  };
  for (const s of [1, 2]) {
    const g = conv(big.n, big.h, c, s === 1 ? c : 2 * c, s);
    out.push({ work: `forward ${g.label}`, kernel: 'Conv2D', inputs: { x: g.x, filter: g.f }, attrs: { ...g.attrs, dilations: 1 }, flops: g.flops, baseline: 'none' });
    out.push({
      work: `input gradient ${g.label}`,
      kernel: 'Conv2DBackpropInput',
      inputs: { dy: g.dy, filter: g.f },
      attrs: { ...g.attrs, inputShape: g.x.shape },
      flops: g.flops,
      baseline: 'native wasm',
    });
    out.push({
      work: `filter gradient ${g.label}`,
      kernel: 'Conv2DBackpropFilter',
      inputs: { x: g.x, dy: g.dy },
      attrs: { ...g.attrs, filterShape: g.f.shape },
      flops: g.flops,
      baseline: 'none',
    });
  }
  const sc = conv(small.n, small.h, small.c, small.c, 1);
  out.push({ work: `filter gradient ${sc.label}`, kernel: 'Conv2DBackpropFilter', inputs: { x: sc.x, dy: sc.dy }, attrs: { ...sc.attrs, filterShape: sc.f.shape }, flops: sc.flops, baseline: 'cpu' });
  const dwC = quick ? 64 : 128;
  const dwH = quick ? 14 : 28;
  const dwFlops = convFlops(big.n, dwH, dwH, dwC, 3, 3, 1);
  const dwLabel = `depthwise 3×3, ${dwC} channels, stride 1, batch ${big.n} of ${dwH}²`;
  out.push({
    work: `input gradient ${dwLabel}`,
    kernel: 'DepthwiseConv2dNativeBackpropInput',
    inputs: { dy: { shape: [big.n, dwH, dwH, dwC] }, filter: { shape: [3, 3, dwC, 1] } },
    attrs: { strides: 1, pad: 'same', dilations: 1, inputShape: [big.n, dwH, dwH, dwC] },
    flops: dwFlops,
    baseline: 'cpu',
  });
  out.push({
    work: `filter gradient ${dwLabel}`,
    kernel: 'DepthwiseConv2dNativeBackpropFilter',
    inputs: { x: { shape: [big.n, dwH, dwH, dwC] }, dy: { shape: [big.n, dwH, dwH, dwC] } },
    attrs: { strides: 1, pad: 'same', dilations: 1, filterShape: [3, 3, dwC, 1] },
    flops: dwFlops,
    baseline: 'cpu',
  });
  // The classifier's products: x[B, 512] against W[C, 512] stored as the reference stores it.
  const b = 128;
  const d = 512;
  const classes = quick ? 4000 : 20000;
  const mm = 2 * b * d * classes;
  out.push({ work: `logits x·Wᵀ, x [${b}, ${d}], W [${classes}, ${d}] (transposeB)`, kernel: 'BatchMatMul', inputs: { a: { shape: [b, d] }, b: { shape: [classes, d] } }, attrs: { transposeA: false, transposeB: true }, flops: mm, baseline: 'native wasm' });
  out.push({ work: `W gradient dlogitsᵀ·x, dlogits [${b}, ${classes}] (transposeA)`, kernel: 'BatchMatMul', inputs: { a: { shape: [b, classes] }, b: { shape: [b, d] } }, attrs: { transposeA: true, transposeB: false }, flops: mm, baseline: 'native wasm' });
  out.push({ work: `x gradient dlogits·W, no flags (pass-through)`, kernel: 'BatchMatMul', inputs: { a: { shape: [b, classes] }, b: { shape: [classes, d] } }, attrs: { transposeA: false, transposeB: false }, flops: mm, baseline: 'native wasm' });
  out.push({ work: `both flags, aᵀ [${d}, ${b}] · bᵀ [${classes}, ${d}]`, kernel: 'BatchMatMul', inputs: { a: { shape: [d, b] }, b: { shape: [classes, d] } }, attrs: { transposeA: true, transposeB: true }, flops: mm, baseline: 'native wasm' });
  const segments = quick ? 200 : 1000; // the cpu kernel loops over every segment: O(segments × rows × width)
  const ids = new Int32Array(b);
  for (let i = 0; i < b; i++) ids[i] = rng.int(segments);
  out.push({
    work: `gather gradient: ${b} rows of ${d} into ${segments} segments`,
    kernel: 'UnsortedSegmentSum',
    inputs: { x: { shape: [b, d] }, segmentIds: { shape: [b], data: ids } },
    attrs: { numSegments: segments },
    flops: b * d,
    baseline: 'cpu',
  });
  return out;
}

/** Median ms of one kernel call, through the engine (registered kernel) or straight to a captured kernelFunc. */
async function measure(c: Case, backend: 'wasm' | 'cpu', native: KernelConfig | undefined, runs: number, warmup = 1): Promise<number> {
  await tf.setBackend(backend);
  const inputs: Record<string, tf.Tensor> = {};
  for (const [k, spec] of Object.entries(c.inputs)) inputs[k] = make(spec);
  const kb = tf.backend() as KernelBackend;
  const call = native
    ? () => {
        const out = native.kernelFunc({ inputs, attrs: c.attrs, backend: kb }) as TensorInfo;
        kb.disposeData(out.dataId);
      }
    : () => {
        tf.dispose(tf.engine().runKernel(c.kernel, inputs, c.attrs) as tf.Tensor);
      };
  const ms = await timeMs(call, runs, warmup);
  tf.dispose(Object.values(inputs));
  return ms;
}

export default async function kernels(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const ti = args.indexOf('--threads');
  const threads = ti >= 0 ? Number(args[ti + 1]) : 1;
  await initBackend({ backend: 'cpu', log: null });
  // Capture the native wasm kernels before @pfc replaces them.
  require('@tensorflow/tfjs-backend-wasm');
  const natives = new Map<string, KernelConfig>();
  for (const name of ['Conv2DBackpropInput', 'BatchMatMul']) {
    const k = tf.getKernel(name, 'wasm');
    if (k) natives.set(name, { ...k });
  }
  const info = await initBackend({ backend: 'wasm', threads, log: null });
  const rows: Row[] = [];
  const loadBefore = loadavg()[0]!;
  for (const c of cases(quick)) {
    const ours = await measure(c, 'wasm', undefined, 5);
    let base: number | null = null;
    if (c.baseline === 'native wasm') base = await measure(c, 'wasm', natives.get(c.kernel), c.kernel === 'BatchMatMul' ? 3 : 2);
    if (c.baseline === 'cpu') base = await measure(c, 'cpu', undefined, 1, 0); // seconds per call: no warm-up
    const gf = (ms: number) => c.flops / ms / 1e6;
    rows.push({
      work: c.work,
      kernel: c.kernel,
      'registered ms': ours,
      'registered GFLOP/s': gf(ours),
      baseline: c.baseline === 'none' ? null : c.baseline,
      'baseline ms': base,
      'baseline GFLOP/s': base === null ? null : gf(base),
      speedup: base === null ? null : base / ours,
    });
    process.stderr.write(`${c.work}: ${ours.toFixed(1)} ms${base === null ? '' : ` vs ${base.toFixed(1)} ms`}\n`);
  }
  writeReport({
    name: threads > 1 ? `kernels-${threads}threads` : 'kernels',
    description:
      'Training kernels @pfc registers for the tfjs wasm backend (4.22, SIMD) against what they replace, on the same tensors in the same run: the native wasm kernel where one exists, else the cpu backend. Median of 5 calls (registered) or 2–3 (native wasm) after one warm-up; cpu: one call. GFLOP/s count the useful multiply-adds (2 per MAC) of the forward convolution or product; the segment sum counts one add per input element.',
    rows,
    notes: [
      `wasm threads: ${info.threads} (${availableParallelism()} logical cores). The cores are shared with other engineers' builds and tests (1-minute load average ${loadBefore.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end), so absolute numbers are contended; the ratios less so.`,
      'Forward conv has no replacement: it is the XNNPACK ceiling the conv gradients are built on (filter gradient: one forward conv with batch and channels swapped, dilation = stride; input gradient: one stride-1 conv of dy with the rotated filter, or at stride 2 four sub-pixel convs with the 2×2, 2×1, 1×2, 1×1 sub-filters, interleaved).',
      'Depthwise filter gradient is the weak spot (~0.2–0.6 GFLOP/s): it runs as one depthwise conv whose "filter" is the whole dy plane, which XNNPACK has no fast kernel for; still ~100× the cpu backend.',
      'The flag-free matmul row is a control: the registered kernel passes it straight to the native one, so its ratio should be ~1 and shows the measurement noise.',
      'The cpu baseline runs on smaller shapes where noted (the cpu conv filter gradient is ~0.015 GFLOP/s); each row compares both on the same shape.',
      `Run: npm run bench -w @pfc/benchmarks -- kernels${quick ? ' --quick' : ''}${threads > 1 ? ` --threads ${threads}` : ''}`,
    ],
  });
}
