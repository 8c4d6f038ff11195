import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, TensorInfo } from '@tensorflow/tfjs-core';

/**
 * Wraps a kernel input as a tensor the kernel may dispose. A backend reference is added first: the wrapper shares
 * the caller's data id, so without it disposing the wrapper (or the `tf.tidy` around the kernel) would free the
 * caller's data.
 */
export function wrapInput(info: TensorInfo, backend: KernelBackend): tf.Tensor {
  backend.incRef(info.dataId);
  return tf.engine().makeTensorFromTensorInfo(info, backend);
}

/** Pads (positive) or crops (negative) the rows and columns of an NHWC tensor; returns the tensor and the pads left to give the conv. */
export function cropForPads(
  x: tf.Tensor4D,
  top: number,
  bottom: number,
  left: number,
  right: number,
): { x: tf.Tensor4D; pads: [number, number, number, number] } {
  const [n, h, w, c] = x.shape;
  const cropTop = Math.max(0, -top);
  const cropBottom = Math.max(0, -bottom);
  const cropLeft = Math.max(0, -left);
  const cropRight = Math.max(0, -right);
  const cropped =
    cropTop + cropBottom + cropLeft + cropRight > 0
      ? tf.slice(x, [0, cropTop, cropLeft, 0], [n, h - cropTop - cropBottom, w - cropLeft - cropRight, c])
      : x;
  return { x: cropped, pads: [Math.max(0, top), Math.max(0, bottom), Math.max(0, left), Math.max(0, right)] };
}

/** The explicit padding attribute of a conv kernel for top, bottom, left, right pads. */
export function explicitPad(pads: [number, number, number, number]): backendExplicitPad {
  return [
    [0, 0],
    [pads[0], pads[1]],
    [pads[2], pads[3]],
    [0, 0],
  ];
}
type backendExplicitPad = [[number, number], [number, number], [number, number], [number, number]];

/**
 * Zero-upsamples the rows and columns of an NHWC tensor by the strides: `[n, h, w, c]` → `[n, h*sh, w*sw, c]` with
 * `x` at multiples of the strides and zeros elsewhere (the trailing `sh-1` rows and `sw-1` columns are zeros too).
 */
export function zeroUpsample(x: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  if (sh === 1 && sw === 1) return x;
  const [n, h, w, c] = x.shape;
  const six = tf.reshape(x, [n, h, 1, w, 1, c]);
  const padded = tf.pad(six, [
    [0, 0],
    [0, 0],
    [0, sh - 1],
    [0, 0],
    [0, sw - 1],
    [0, 0],
  ]);
  return tf.reshape(padded, [n, h * sh, w * sw, c]);
}
