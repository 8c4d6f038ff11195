/**
 * Training kernels that `@tensorflow/tfjs-backend-wasm` 4.22 lacks or runs slowly, registered for the wasm backend.
 * Registration is idempotent.
 *
 * Missing: `Conv2DBackpropFilter`, `DepthwiseConv2dNativeBackpropFilter`, `DepthwiseConv2dNativeBackpropInput`,
 * `UnsortedSegmentSum` (the gradient of `gather`). Replaced because the native one is slow: `Conv2DBackpropInput`
 * (a naive loop, ~10× slower than a forward conv), and `BatchMatMul` / `_FusedMatMul` with transpose flags (a naive
 * loop, 10–30× slower than without). Each is computed with the fast forward kernels wasm has (see `./wasm/*`).
 * Fixed: `GatherV2` with `batchDims > 0` (the native kernel reads rows of the wrong batch).
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import { getKernel, registerKernel, unregisterKernel } from '@tensorflow/tfjs-core';
// tfjs-core's CommonJS build leaves out the gradient definitions (`tf.grads` fails with "gradient function not found
// for Sum"); loading this registers them, after tfjs-core above has created the process-global engine they share.
// A binding is imported and used (not a bare side-effect import), or `"sideEffects": false` lets the build drop it.
import { TFJS_CORE_VERSION as GRADIENTS_VERSION } from './wasm/tfjs-gradients.cjs';
import type { KernelBackend, KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { PfcError } from './errors';
import { conv2dFilterGrad, conv2dInputGrad, depthwiseFilterGrad, depthwiseInputGrad } from './wasm/conv';
import type { ConvGeometry } from './wasm/conv';
import { matMulWithoutFlags } from './wasm/matmul';
import { unsortedSegmentSum } from './wasm/segment';
import { batchedGather } from './wasm/gather';
import { wrapInput } from './wasm/tensors';

const BACKEND = 'wasm';
const localRequire = createRequire(__filename);

/** Names of the kernels {@link registerWasmTrainingKernels} registers for the wasm backend. */
export const WASM_TRAINING_KERNELS = [
  'Conv2DBackpropFilter',
  'Conv2DBackpropInput',
  'DepthwiseConv2dNativeBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
  'UnsortedSegmentSum',
  'BatchMatMul',
  '_FusedMatMul',
  'GatherV2',
] as const;

const ours = new WeakSet<KernelFunc>();

type Shape4 = [number, number, number, number];

function geometry(attrs: NamedAttrMap): ConvGeometry {
  const a = attrs as unknown as ConvGeometry;
  return { strides: a.strides, dilations: a.dilations ?? 1, pad: a.pad, dimRoundingMode: a.dimRoundingMode };
}

/** A kernel computed with tensor ops: its inputs are wrapped (with a reference) and its intermediates disposed. */
function tensorKernel(compute: (inputs: Record<string, tf.Tensor>, attrs: NamedAttrMap) => tf.Tensor): KernelFunc {
  const fn: KernelFunc = ({ inputs, attrs, backend }) =>
    tf.tidy(() => {
      const wrapped: Record<string, tf.Tensor> = {};
      for (const [name, info] of Object.entries(inputs)) if (info) wrapped[name] = wrapInput(info as TensorInfo, backend as KernelBackend);
      return compute(wrapped, attrs ?? {});
    });
  ours.add(fn);
  return fn;
}

const conv2DBackpropFilter = tensorKernel(({ x, dy }, attrs) =>
  conv2dFilterGrad(x as tf.Tensor4D, dy as tf.Tensor4D, attrs.filterShape as Shape4, geometry(attrs), attrs.dataFormat as string | undefined),
);
const conv2DBackpropInput = tensorKernel(({ dy, filter }, attrs) =>
  conv2dInputGrad(attrs.inputShape as Shape4, dy as tf.Tensor4D, filter as tf.Tensor4D, geometry(attrs), attrs.dataFormat as string | undefined),
);
const depthwiseBackpropFilter = tensorKernel(({ x, dy }, attrs) =>
  depthwiseFilterGrad(x as tf.Tensor4D, dy as tf.Tensor4D, attrs.filterShape as Shape4, geometry(attrs)),
);
const depthwiseBackpropInput = tensorKernel(({ dy, filter }, attrs) =>
  depthwiseInputGrad(attrs.inputShape as Shape4, dy as tf.Tensor4D, filter as tf.Tensor4D, geometry(attrs)),
);
const segmentSum = tensorKernel(({ x, segmentIds }, attrs) => unsortedSegmentSum(x!, segmentIds!, attrs.numSegments as number));

/** Wraps a native matmul kernel: flag-free calls go straight to it, flagged ones are rewritten without flags. */
function flagFreeMatMul(native: KernelConfig): KernelFunc {
  const rewritten = tensorKernel(({ a, b, ...rest }, attrs) => {
    const extra = Object.keys(rest).length > 0;
    return matMulWithoutFlags(a!, b!, attrs.transposeA === true, attrs.transposeB === true, (left, right) => {
      // Bias and activation apply to the output, so _FusedMatMul keeps its operands' order (no swapped plan).
      return tf.engine().runKernel(native.kernelName, { ...rest, a: left, b: right }, { ...attrs, transposeA: false, transposeB: false }) as tf.Tensor;
    }, !extra);
  });
  const fn: KernelFunc = (args) => (args.attrs?.transposeA || args.attrs?.transposeB ? rewritten(args) : native.kernelFunc(args));
  ours.add(fn);
  return fn;
}

/** Wraps the native gather: `batchDims` 0 goes straight to it, batched gathers through {@link batchedGather}. */
function batchedGatherKernel(native: KernelConfig): KernelFunc {
  const batched = tensorKernel(({ x, indices }, attrs) => batchedGather(x!, indices!, attrs.axis as number, attrs.batchDims as number));
  const fn: KernelFunc = (args) => ((args.attrs?.batchDims as number | undefined) ? batched(args) : native.kernelFunc(args));
  ours.add(fn);
  return fn;
}

function register(kernelName: string, kernelFunc: KernelFunc): void {
  const existing = getKernel(kernelName, BACKEND);
  if (existing && ours.has(existing.kernelFunc)) return;
  if (existing) unregisterKernel(kernelName, BACKEND);
  // A replaced kernel keeps the native setup: it binds the wasm function the native kernelFunc calls, which the
  // matmul wrappers call through and which stays usable for comparisons (benchmarks/src/kernels.ts).
  registerKernel({ kernelName, backendName: BACKEND, kernelFunc, setupFunc: existing?.setupFunc, disposeFunc: existing?.disposeFunc });
}

let registered = false;

/**
 * Registers @pfc's wasm training kernels (idempotent). Called by `initBackend` before selecting wasm. Loads
 * `@tensorflow/tfjs-backend-wasm` first, so its own kernels are registered before some are replaced.
 */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  if (GRADIENTS_VERSION !== tf.version_core) {
    throw new PfcError(
      'E_TFJS_VERSION',
      `@pfc/core bundles the gradients of @tensorflow/tfjs-core ${GRADIENTS_VERSION} but ${tf.version_core} is loaded; install exactly ${GRADIENTS_VERSION}`,
      { details: { bundled: GRADIENTS_VERSION, loaded: tf.version_core } },
    );
  }
  localRequire('@tensorflow/tfjs-backend-wasm');
  register('Conv2DBackpropFilter', conv2DBackpropFilter);
  register('Conv2DBackpropInput', conv2DBackpropInput);
  register('DepthwiseConv2dNativeBackpropFilter', depthwiseBackpropFilter);
  register('DepthwiseConv2dNativeBackpropInput', depthwiseBackpropInput);
  register('UnsortedSegmentSum', segmentSum);
  for (const name of ['BatchMatMul', '_FusedMatMul']) {
    const native = getKernel(name, BACKEND);
    if (native && !ours.has(native.kernelFunc)) register(name, flagFreeMatMul(native));
  }
  const nativeGather = getKernel('GatherV2', BACKEND);
  if (nativeGather && !ours.has(nativeGather.kernelFunc)) register('GatherV2', batchedGatherKernel(nativeGather));
  registered = true;
}
