/**
 * `gather` with `batchDims > 0` for the wasm backend: tfjs-backend-wasm 4.22's native GatherV2 reads rows of the
 * wrong batch then. Each (batch, outer) block's indices are offset into one flat table and gathered with
 * `batchDims` 0, which the native kernel gets right.
 */
import * as tf from '@tensorflow/tfjs-core';
import { backend_util, util } from '@tensorflow/tfjs-core';
import { PfcError } from '../errors';

/**
 * @param x `[...batch, ...outer, dim, ...inner]`
 * @param indices int32 `[...batch, ...idx]`, values in `[0, dim)`
 * @returns `[...batch, ...outer, ...idx, ...inner]`
 */
export function batchedGather(x: tf.Tensor, indices: tf.Tensor, axis: number, batchDims: number): tf.Tensor {
  const parsedAxis = util.parseAxisParam(axis, x.shape)[0]!;
  const info = backend_util.segment_util.collectGatherOpShapeInfo(x as tf.TensorInfo as never, indices as tf.TensorInfo as never, parsedAxis, batchDims);
  const { batchSize, outerSize, dimSize, sliceSize, outputShape } = info;
  const perBatch = indices.size / batchSize;
  const idx = indices.dataSync() as Int32Array;
  for (const v of idx) {
    // An index out of its row would silently read a neighbouring (batch, outer) block of the flat table.
    if (!(v >= 0 && v < dimSize)) {
      throw new PfcError('E_WASM_KERNEL', `GatherV2: the index value ${v} is not in [0, ${dimSize - 1}]`, { details: { op: 'GatherV2', index: v, dimSize } });
    }
  }
  const flat = new Int32Array(batchSize * outerSize * perBatch);
  for (let b = 0, j = 0; b < batchSize; b++) {
    for (let o = 0; o < outerSize; o++) {
      const base = (b * outerSize + o) * dimSize;
      for (let k = 0; k < perBatch; k++) flat[j++] = base + idx[b * perBatch + k]!;
    }
  }
  const table = tf.reshape(x, [batchSize * outerSize * dimSize, sliceSize]);
  return tf.reshape(tf.gather(table, tf.tensor1d(flat, 'int32'), 0), outputShape);
}
