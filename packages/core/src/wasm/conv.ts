/**
 * Convolution gradients for the wasm backend, each computed as one forward convolution (which XNNPACK runs fast)
 * on rearranged operands. Shapes are NHWC, filters `[filterHeight, filterWidth, inChannels, outChannels]`
 * (depthwise: `[filterHeight, filterWidth, inChannels, channelMultiplier]`), all float32.
 */
import * as tf from '@tensorflow/tfjs-core';
import { backend_util } from '@tensorflow/tfjs-core';
import { PfcError } from '../errors';
import { cropForPads, explicitPad, zeroUpsample } from './tensors';

type Pad = 'same' | 'valid' | number | backend_util.ExplicitPadding;
type Rounding = 'floor' | 'round' | 'ceil' | undefined;

/** Geometry of a forward convolution, as the gradient kernels receive it. */
export interface ConvGeometry {
  strides: number | [number, number];
  dilations: number | [number, number];
  pad: Pad;
  dimRoundingMode?: Rounding;
}

function convInfo(
  op: string,
  xShape: readonly number[],
  filterShape: readonly number[],
  g: ConvGeometry,
  depthwise: boolean,
  dataFormat?: string,
): backend_util.Conv2DInfo {
  if (dataFormat !== undefined && dataFormat !== 'NHWC' && dataFormat !== 'channelsLast') {
    throw new PfcError('E_WASM_KERNEL', `${op}: dataFormat ${JSON.stringify(dataFormat)} is not supported by the wasm backend; expected 'NHWC'`, {
      details: { op, dataFormat },
    });
  }
  if (xShape.length !== 4 || filterShape.length !== 4) {
    throw new PfcError('E_WASM_KERNEL', `${op}: input shape [${xShape.join(', ')}] and filter shape [${filterShape.join(', ')}] must both be rank 4`, {
      details: { op, xShape: [...xShape], filterShape: [...filterShape] },
    });
  }
  return backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    g.strides,
    g.dilations,
    g.pad,
    g.dimRoundingMode,
    depthwise,
    'channelsLast',
  );
}

function sameShape(dy: tf.Tensor, info: backend_util.Conv2DInfo): boolean {
  return dy.rank === 4 && dy.shape.every((d, i) => d === info.outShape[i]);
}

/**
 * The forward geometry of a gradient kernel, checked against dy. tfjs's conv2d gradient drops the forward pass's
 * `dimRoundingMode`, so with a numeric pad and no rounding mode given, the rounding that reproduces dy's shape is used
 * (the cpu backend instead ignores dy's extra row and column).
 */
function gradInfo(
  op: string,
  xShape: readonly number[],
  filterShape: readonly number[],
  g: ConvGeometry,
  depthwise: boolean,
  dy: tf.Tensor,
  dataFormat?: string,
): backend_util.Conv2DInfo {
  const info = convInfo(op, xShape, filterShape, g, depthwise, dataFormat);
  if (!sameShape(dy, info) && typeof g.pad === 'number' && g.dimRoundingMode === undefined) {
    for (const dimRoundingMode of ['ceil', 'round'] as const) {
      const other = convInfo(op, xShape, filterShape, { ...g, dimRoundingMode }, depthwise, dataFormat);
      if (sameShape(dy, other)) return other;
    }
  }
  checkDy(op, dy, info);
  return info;
}

function checkDy(op: string, dy: tf.Tensor, info: backend_util.Conv2DInfo): void {
  const expected = info.outShape;
  if (!sameShape(dy, info)) {
    throw new PfcError('E_WASM_KERNEL', `${op}: dy has shape [${dy.shape.join(', ')}]; the forward convolution's output shape is [${expected.join(', ')}]`, {
      details: { op, dyShape: [...dy.shape], expected: [...expected] },
    });
  }
}

/**
 * Rows (or columns) of the input that a filter gradient reads: the padded span starts at `-padBefore` and ends at
 * the last tap of the last output. Returns the pad after the input (negative: rows to crop).
 */
function padAfter(inSize: number, padBefore: number, filterSize: number, dilation: number, outSize: number, stride: number): number {
  const needed = (filterSize - 1) * dilation + (outSize - 1) * stride + 1;
  return needed - padBefore - inSize;
}

/**
 * Gradient of `conv2d` with respect to its filter, as a forward convolution of the input with batch and channels
 * swapped (`[inChannels, H, W, N]`) by dy used as the filter (`[outH, outW, N, outChannels]`); the forward stride
 * becomes the dilation and the forward dilation the stride.
 * @param x `[N, H, W, inChannels]`
 * @param dy `[N, outH, outW, outChannels]`
 * @returns `[filterHeight, filterWidth, inChannels, outChannels]`
 */
export function conv2dFilterGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: [number, number, number, number],
  g: ConvGeometry,
  dataFormat?: string,
): tf.Tensor4D {
  const op = 'Conv2DBackpropFilter';
  const info = gradInfo(op, x.shape, filterShape, g, false, dy, dataFormat);
  const { top, left } = info.padInfo;
  const bottom = padAfter(info.inHeight, top, info.filterHeight, info.dilationHeight, info.outHeight, info.strideHeight);
  const right = padAfter(info.inWidth, left, info.filterWidth, info.dilationWidth, info.outWidth, info.strideWidth);
  const { x: xc, pads } = cropForPads(x, top, bottom, left, right);
  const xT = tf.transpose(xc, [3, 1, 2, 0]);
  const dyT = tf.transpose(dy, [1, 2, 0, 3]);
  const out = tf.engine().runKernel(
    'Conv2D',
    { x: xT, filter: dyT },
    {
      strides: [info.dilationHeight, info.dilationWidth],
      dilations: [info.strideHeight, info.strideWidth],
      pad: explicitPad(pads),
      dataFormat: 'NHWC',
    },
  ) as tf.Tensor4D;
  return tf.transpose(out, [1, 2, 0, 3]);
}

/**
 * Pads for the input gradient: a stride-1 convolution of the zero-upsampled dy (`outH*strideH` rows) with the
 * rotated filter must give `inH` rows.
 */
function inputGradPads(info: backend_util.Conv2DInfo): [number, number, number, number] {
  const effH = (info.filterHeight - 1) * info.dilationHeight;
  const effW = (info.filterWidth - 1) * info.dilationWidth;
  const top = effH - info.padInfo.top;
  const left = effW - info.padInfo.left;
  const bottom = info.inHeight - info.outHeight * info.strideHeight + info.padInfo.top;
  const right = info.inWidth - info.outWidth * info.strideWidth + info.padInfo.left;
  return [top, bottom, left, right];
}

/** A stride-1 forward convolution with explicit pads (top, bottom, left, right) and dilations. */
type StrideOneConv = (x: tf.Tensor4D, filter: tf.Tensor4D, pads: [number, number, number, number], dilations: [number, number]) => tf.Tensor4D;

/**
 * The input gradient of a convolution: dx[q] = Σ dy[o]·w[k] over q = o·stride + k·dilation − pad.
 * `filter` is in the layout `conv` takes, not yet rotated: `[fh, fw, dyChannels, ...]`.
 *
 * Stride 1: one convolution of dy with the rotated filter. Stride > 1 (dilation 1): the sub-pixel decomposition —
 * the rows q ≡ r (mod stride) of the padded dx only see the filter taps r, r+stride, …, so each of the
 * strideH×strideW phases is a stride-1 convolution of dy with that sub-filter, rotated, and the phases are
 * interleaved. This does the useful work once, where convolving the zero-upsampled dy would do it strideH×strideW
 * times. Stride and dilation both > 1 (never produced by tfjs's gradients) falls back to the zero-upsampled dy, and
 * so does the depthwise gradient (`subPixel` false): XNNPACK's depthwise kernels for the 2×2, 2×1 and 1×1
 * sub-filters were ~8× slower than one 3×3 on the upsampled dy.
 */
function inputGradient(
  info: backend_util.Conv2DInfo,
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  outChannels: number,
  conv: StrideOneConv,
  subPixel: boolean,
): tf.Tensor4D {
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
  if ((sh === 1 && sw === 1) || dh > 1 || dw > 1 || !subPixel) {
    const up = zeroUpsample(dy, sh, sw);
    const [t, b, l, r] = inputGradPads(info);
    const { x, pads } = cropForPads(up, t, b, l, r);
    return conv(x, tf.reverse(filter, [0, 1]), pads, [dh, dw]);
  }
  const { filterHeight: fh, filterWidth: fw, outHeight: oh, outWidth: ow, inHeight: h, inWidth: w, batchSize: n } = info;
  const { top: pt, left: pl } = info.padInfo;
  const rowsPerPhase = Math.ceil((pt + h) / sh);
  const colsPerPhase = Math.ceil((pl + w) / sw);
  const [, , a, b] = filter.shape;
  const rows: tf.Tensor[] = [];
  for (let rh = 0; rh < sh; rh++) {
    const cols: tf.Tensor[] = [];
    for (let rw = 0; rw < sw; rw++) {
      const th = Math.ceil((fh - rh) / sh);
      const tw = Math.ceil((fw - rw) / sw);
      if (th <= 0 || tw <= 0) {
        cols.push(tf.zeros([n, rowsPerPhase, colsPerPhase, outChannels]));
        continue;
      }
      const sub = tf.stridedSlice(filter, [rh, rw, 0, 0], [fh, fw, a, b], [sh, sw, 1, 1]) as tf.Tensor4D;
      const { x, pads } = cropForPads(dy, th - 1, rowsPerPhase - oh, tw - 1, colsPerPhase - ow);
      cols.push(conv(x, tf.reverse(sub, [0, 1]), pads, [1, 1]));
    }
    rows.push(tf.stack(cols, 3)); // [n, rowsPerPhase, colsPerPhase, sw, c]
  }
  const interleaved = tf.reshape(tf.stack(rows, 2), [n, rowsPerPhase * sh, colsPerPhase * sw, outChannels]);
  return tf.slice(interleaved, [0, pt, pl, 0], [n, h, w, outChannels]) as tf.Tensor4D;
}

const conv2dStrideOne: StrideOneConv = (x, filter, pads, dilations) =>
  tf.engine().runKernel('Conv2D', { x, filter }, { strides: [1, 1], dilations, pad: explicitPad(pads), dataFormat: 'NHWC' }) as tf.Tensor4D;

/**
 * Gradient of `conv2d` with respect to its input (also the forward pass of `conv2dTranspose`), as stride-1 forward
 * convolutions of dy with the spatially rotated filter whose in/out channels are swapped (see `inputGradient`).
 * @param inputShape `[N, H, W, inChannels]`
 * @param dy `[N, outH, outW, outChannels]`
 * @param filter `[filterHeight, filterWidth, inChannels, outChannels]`
 * @returns `[N, H, W, inChannels]`
 */
export function conv2dInputGrad(
  inputShape: [number, number, number, number],
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  g: ConvGeometry,
  dataFormat?: string,
): tf.Tensor4D {
  const op = 'Conv2DBackpropInput';
  const info = gradInfo(op, inputShape, filter.shape, g, false, dy, dataFormat);
  return inputGradient(info, dy, tf.transpose(filter, [0, 1, 3, 2]), inputShape[3], conv2dStrideOne, true);
}

/**
 * Gradient of `depthwiseConv2d` with respect to its filter, as one depthwise convolution with batch 1 whose channels
 * are the (channel, example) pairs of the input and whose per-channel filters are the matching dy planes; the
 * examples are then summed.
 * @param x `[N, H, W, C]`
 * @param dy `[N, outH, outW, C*M]`
 * @returns `[filterHeight, filterWidth, C, M]`
 */
export function depthwiseFilterGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: [number, number, number, number],
  g: ConvGeometry,
): tf.Tensor4D {
  const op = 'DepthwiseConv2dNativeBackpropFilter';
  const info = gradInfo(op, x.shape, filterShape, g, true, dy);
  const [fh, fw, c, m] = filterShape;
  const n = info.batchSize;
  const { top, left } = info.padInfo;
  const bottom = padAfter(info.inHeight, top, fh, info.dilationHeight, info.outHeight, info.strideHeight);
  const right = padAfter(info.inWidth, left, fw, info.dilationWidth, info.outWidth, info.strideWidth);
  const { x: xc, pads } = cropForPads(x, top, bottom, left, right);
  const [, hc, wc] = xc.shape;
  const image = tf.reshape(tf.transpose(xc, [1, 2, 3, 0]), [1, hc, wc, c * n]);
  const planes = tf.reshape(tf.transpose(tf.reshape(dy, [n, info.outHeight, info.outWidth, c, m]), [1, 2, 3, 0, 4]), [
    info.outHeight,
    info.outWidth,
    c * n,
    m,
  ]);
  const out = tf.engine().runKernel(
    'DepthwiseConv2dNative',
    { x: image, filter: planes },
    { strides: [info.dilationHeight, info.dilationWidth], dilations: [info.strideHeight, info.strideWidth], pad: explicitPad(pads) },
  ) as tf.Tensor4D;
  return n === 1 ? tf.reshape(out, [fh, fw, c, m]) : tf.sum(tf.reshape(out, [fh, fw, c, n, m]), 3);
}

/**
 * Gradient of `depthwiseConv2d` with respect to its input, as a stride-1 depthwise convolution of the zero-upsampled
 * dy (C*M channels) with the rotated filter, then a sum over the channel multiplier.
 * @param inputShape `[N, H, W, C]`
 * @param dy `[N, outH, outW, C*M]`
 * @param filter `[filterHeight, filterWidth, C, M]`
 * @returns `[N, H, W, C]`
 */
export function depthwiseInputGrad(
  inputShape: [number, number, number, number],
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  g: ConvGeometry,
): tf.Tensor4D {
  const op = 'DepthwiseConv2dNativeBackpropInput';
  const info = gradInfo(op, inputShape, filter.shape, g, true, dy);
  const [fh, fw, c, m] = filter.shape;
  const conv: StrideOneConv = (x, f, pads, dilations) => {
    const z = tf.engine().runKernel('DepthwiseConv2dNative', { x, filter: f }, { strides: [1, 1], dilations, pad: explicitPad(pads) }) as tf.Tensor4D;
    if (m === 1) return z;
    const [n, h, w] = z.shape;
    return tf.sum(tf.reshape(z, [n, h, w, c, m]), 4);
  };
  return inputGradient(info, dy, tf.reshape(filter, [fh, fw, c * m, 1]), c, conv, false);
}
