/**
 * `unsortedSegmentSum` (the gradient of `gather`) for the wasm backend, through `scatterND`, which sums the updates
 * that land on the same index.
 */
import * as tf from '@tensorflow/tfjs-core';
import { PfcError } from '../errors';

/**
 * Sums the slices of `x` that share a segment id. Ids outside `[0, numSegments)` are dropped (as in TensorFlow).
 * @param x `[...segmentIds.shape, ...inner]`, float32 or int32
 * @param segmentIds int32, a prefix of `x.shape`
 * @returns `[numSegments, ...inner]`, the dtype of `x`
 */
export function unsortedSegmentSum(x: tf.Tensor, segmentIds: tf.Tensor, numSegments: number): tf.Tensor {
  const op = 'UnsortedSegmentSum';
  const idRank = segmentIds.rank;
  if (idRank > x.rank || segmentIds.shape.some((d, i) => d !== x.shape[i])) {
    throw new PfcError('E_WASM_KERNEL', `${op}: segmentIds shape [${segmentIds.shape.join(', ')}] must be a prefix of x shape [${x.shape.join(', ')}]`, {
      details: { op, segmentIdsShape: [...segmentIds.shape], xShape: [...x.shape] },
    });
  }
  if (!Number.isInteger(numSegments) || numSegments < 0) {
    throw new PfcError('E_WASM_KERNEL', `${op}: numSegments must be a non-negative integer, got ${numSegments}`, { details: { op, numSegments } });
  }
  const inner = x.shape.slice(idRank);
  const count = segmentIds.size;
  const outShape = [numSegments, ...inner];
  if (count === 0 || numSegments === 0) return tf.zeros(outShape, x.dtype);
  const ids = segmentIds.dtype === 'int32' ? segmentIds : tf.cast(segmentIds, 'int32');
  const values = tf.reshape(x, [count, ...inner]);
  // scatterND writes out of bounds for an id outside the output; read the (small) id vector to drop those.
  const idData = ids.dataSync() as Int32Array;
  let valid = 0;
  for (let i = 0; i < count; i++) if (idData[i]! >= 0 && idData[i]! < numSegments) valid++;
  if (valid === count) return tf.scatterND(tf.reshape(ids, [count, 1]), values, outShape);
  if (valid === 0) return tf.zeros(outShape, x.dtype);
  const keep = new Int32Array(valid);
  const keptIds = new Int32Array(valid);
  for (let i = 0, j = 0; i < count; i++) {
    const id = idData[i]!;
    if (id >= 0 && id < numSegments) {
      keep[j] = i;
      keptIds[j++] = id;
    }
  }
  return tf.scatterND(tf.tensor2d(keptIds, [valid, 1], 'int32'), tf.gather(values, tf.tensor1d(keep, 'int32')), outShape);
}
