import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { PfcError, initBackend } from '@pfc/core';
import { alignFace } from './align';
import { auc, rocCurve } from './roc';
import { decodeImage } from './image';
import { embedImages, flipBatch, functionEmbedder, onnxEmbedder, tfjsEmbedder, toModelInput } from './embed';

const real = join(__dirname, '../../../../shared/realdata');
const model = join(real, 'models/mobilefacenet_128d.onnx');
const landmarks = join(real, 'landmarks/faces_5pt.json');

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

describe('embedders', () => {
  it('normalises and lays out pixels (NHWC and NCHW)', () => {
    const img = Uint8Array.from({ length: 2 * 2 * 3 }, (_, i) => i * 20);
    const nhwc = toModelInput(img, 1, 2, { mean: 127.5, std: 127.5 }, 'nhwc');
    expect(nhwc[1]).toBeCloseTo((20 - 127.5) / 127.5, 6);
    const nchw = toModelInput(img, 1, 2, { mean: 127, std: 128 }, 'nchw');
    // channel 1 of pixel 0 (value 20) sits at offset 1 × 4 + 0
    expect(nchw[4]).toBeCloseTo((20 - 127) / 128, 6);
    expect(nchw[1]).toBeCloseTo((60 - 127) / 128, 6);
  });

  it('flips crops left-right', () => {
    const img = Uint8Array.from({ length: 2 * 2 * 3 }, (_, i) => i);
    expect(Array.from(flipBatch(img, 1, 2))).toEqual([3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8]);
  });

  it('runs a duck-typed tfjs model in batches without leaking tensors, with the flip pass', async () => {
    const m = { apply: (x: tf.Tensor4D) => tf.mean(x, [1, 2]) as tf.Tensor2D };
    const emb = tfjsEmbedder(m);
    const n = 5;
    const imgs = Uint8Array.from({ length: n * 112 * 112 * 3 }, (_, i) => (i * 7) % 256);
    const before = tf.memory().numTensors;
    const res = await embedImages(emb, imgs, n, { batchSize: 2, progress: false });
    expect(tf.memory().numTensors).toBe(before);
    expect(res.dim).toBe(3);
    expect(res.flipEmbeddings).toBeDefined();
    // channel means do not change under a flip
    res.embeddings.forEach((v, i) => expect(Math.abs(v - res.flipEmbeddings![i]!)).toBeLessThan(1e-5));
    const direct = await functionEmbedder((x, k, s) => {
      const out = new Float32Array(k * 3);
      for (let i = 0; i < k * s * s; i++) for (let c = 0; c < 3; c++) out[Math.floor(i / (s * s)) * 3 + c]! += x[i * 3 + c]! / (s * s);
      return out;
    }).embed(imgs, n);
    // float32 accumulation order differs: 1e-5 absolute
    direct.forEach((v, i) => expect(Math.abs(v - res.embeddings[i]!)).toBeLessThan(1e-5));
  });

  it('reports a model that cannot be loaded', async () => {
    await expect(onnxEmbedder('/nonexistent/model.onnx')).rejects.toMatchObject({ code: 'E_MODEL_LOAD' });
    await expect(onnxEmbedder('/nonexistent/model.onnx')).rejects.toBeInstanceOf(PfcError);
  });

  (existsSync(model) && existsSync(landmarks) ? it : it.skip)('aligned real photos through the MobileFaceNet ONNX model separate the people', async () => {
    const emb = await onnxEmbedder(model, { normalization: { mean: 127, std: 128 } });
    expect(emb.fixedBatch).toBe(1);
    const meta = JSON.parse(readFileSync(landmarks, 'utf8')) as { images: { file: string; identity: string; landmarks_5pt: number[][] }[] };
    const crops = new Uint8Array(meta.images.length * 112 * 112 * 3);
    for (const [i, im] of meta.images.entries()) {
      const img = await decodeImage(readFileSync(join(real, im.file)), im.file);
      crops.set(alignFace(img, im.landmarks_5pt).data, i * 112 * 112 * 3);
    }
    const res = await embedImages(emb, crops, meta.images.length, { progress: false });
    const d = res.dim;
    const f = new Float64Array(res.embeddings.length);
    for (let r = 0; r < meta.images.length; r++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += (res.embeddings[r * d + k]! + res.flipEmbeddings![r * d + k]!) ** 2;
      for (let k = 0; k < d; k++) f[r * d + k] = (res.embeddings[r * d + k]! + res.flipEmbeddings![r * d + k]!) / Math.sqrt(s);
    }
    const scores: number[] = [];
    const labels: number[] = [];
    for (let a = 0; a < meta.images.length; a++)
      for (let b = a + 1; b < meta.images.length; b++) {
        let s = 0;
        for (let k = 0; k < d; k++) s += f[a * d + k]! * f[b * d + k]!;
        scores.push(s);
        labels.push(meta.images[a]!.identity === meta.images[b]!.identity ? 1 : 0);
      }
    const roc = rocCurve(scores, labels);
    const area = auc(roc.fpr, roc.tpr);
    const mean = (l: number) => scores.filter((_, i) => labels[i] === l).reduce((x, y) => x + y, 0) / labels.filter((x) => x === l).length;
    process.stderr.write(`realdata MobileFaceNet: ${meta.images.length} photos, AUC ${area.toFixed(4)}, mean cosine same ${mean(1).toFixed(3)} / different ${mean(0).toFixed(3)}\n`);
    expect(area).toBeGreaterThan(0.95);
    expect(mean(1)).toBeGreaterThan(mean(0) + 0.3);
    await emb.dispose?.();
  });
});
