import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PfcError, Rng, assertArg } from '@pfc/core';
import { RecordIOReader, classOf, decodeImage, unpackRecord, writeNormalized } from '@pfc/data';

/** A training set as the trainer reads it: decoded, normalised images by sample index. */
export interface TrainData {
  readonly numImages: number;
  readonly numClasses: number;
  /** Square image side in pixels. */
  readonly imageSize: number;
  /**
   * Images of the given samples as NHWC float32 [n, S, S, 3] in [-1, 1] ((x − 127.5)/127.5), flipped horizontally
   * where `flip[i]` is 1, and their int32 labels.
   */
  load(indices: Int32Array, flip: Uint8Array): Promise<{ images: Float32Array; labels: Int32Array }>;
  close(): void;
}

/** Images already decoded and normalised in memory (tests, benchmarks, synthetic runs). */
export class ArrayTrainData implements TrainData {
  readonly numImages: number;
  constructor(
    readonly images: Float32Array,
    readonly labels: Int32Array,
    readonly imageSize: number,
    readonly numClasses: number,
  ) {
    const per = imageSize * imageSize * 3;
    assertArg(images.length === labels.length * per, 'ArrayTrainData', 'images', images.length, `${labels.length}·${per} values (NHWC)`);
    this.numImages = labels.length;
  }

  async load(indices: Int32Array, flip: Uint8Array): Promise<{ images: Float32Array; labels: Int32Array }> {
    const S = this.imageSize;
    const per = S * S * 3;
    const out = new Float32Array(indices.length * per);
    const labels = new Int32Array(indices.length);
    indices.forEach((k, i) => {
      labels[i] = this.labels[k]!;
      const src = this.images.subarray(k * per, (k + 1) * per);
      if (!flip[i]) out.set(src, i * per);
      else for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) for (let c = 0; c < 3; c++) out[i * per + (y * S + x) * 3 + c] = src[(y * S + (S - 1 - x)) * 3 + c]!;
    });
    return { images: out, labels };
  }

  close(): void {}
}

/**
 * A RecordIO training set (`train.rec` + `train.idx`, InsightFace layout with header record 0, or plain im2rec),
 * read with `@pfc/data`'s reader and decoded with sharp, as the reference's `MXFaceDataset`.
 */
export class RecordTrainData implements TrainData {
  readonly numImages: number;
  readonly numClasses: number;
  private readonly reader: RecordIOReader;
  private readonly keys: number[];
  readonly source: string;

  /**
   * @param path a `.rec` file or a directory holding `train.rec`
   * @param imageSize expected image side; images of another size are an `E_SHAPE` error naming the record
   * @param numClasses class count when the file does not say (im2rec layout)
   */
  constructor(
    path: string,
    readonly imageSize: number,
    numClasses?: number,
  ) {
    const rec = existsSync(path) && statSync(path).isDirectory() ? join(path, 'train.rec') : path;
    if (!existsSync(rec)) throw new PfcError('E_DATA', `RecordTrainData: ${rec} does not exist`, { details: { file: rec } });
    this.source = rec;
    this.reader = new RecordIOReader(rec);
    const head = this.reader.has(0) ? unpackRecord(this.reader.read(0), { file: rec, key: 0 }).header : null;
    if (head && head.flag > 0 && head.labels && head.labels.length >= 2) {
      const a = head.labels[0]!;
      const b = head.labels[1]!;
      this.keys = Array.from({ length: a - 1 }, (_, i) => i + 1);
      this.numClasses = b - a;
    } else {
      this.keys = [...this.reader.keys];
      if (numClasses === undefined) throw new PfcError('E_DATA', `RecordTrainData: ${rec} has no InsightFace header record; pass num_classes`);
      this.numClasses = numClasses;
    }
    if (numClasses !== undefined && numClasses !== this.numClasses) {
      throw new PfcError('E_CONFIG', `RecordTrainData: config num_classes is ${numClasses} but ${rec} holds ${this.numClasses} classes`, { details: { field: 'num_classes' } });
    }
    this.numImages = this.keys.length;
  }

  async load(indices: Int32Array, flip: Uint8Array): Promise<{ images: Float32Array; labels: Int32Array }> {
    const S = this.imageSize;
    const out = new Float32Array(indices.length * S * S * 3);
    const labels = new Int32Array(indices.length);
    await Promise.all(
      Array.from(indices, async (k, i) => {
        const key = this.keys[k]!;
        const { header, image } = unpackRecord(this.reader.read(key), { file: this.source, key });
        labels[i] = classOf(header, { file: this.source, key });
        const img = await decodeImage(image, `${this.source} key ${key}`);
        if (img.width !== S || img.height !== S) {
          throw new PfcError('E_SHAPE', `${this.source} key ${key}: image is ${img.width}×${img.height}, the network expects ${S}×${S}`, { details: { key } });
        }
        writeNormalized(out, i, img, flip[i] === 1);
      }),
    );
    return { images: out, labels };
  }

  close(): void {
    this.reader.close();
  }
}

/**
 * The order in which samples are consumed: one permutation of all samples per epoch (seeded by seed and epoch),
 * cut into global batches of B·W; rank r takes the r-th slice of B of each global batch (drop-last). The sequence of
 * global batches does not depend on the world size, so a run resumed with another rank count reads the same data
 * in the same order. Flips (p = 0.5) are drawn per sample position, also independent of the world size.
 */
export class GlobalBatchSampler {
  private cachedEpoch = -1;
  private perm: Int32Array = new Int32Array(0);
  private flips = new Uint8Array(0);

  constructor(
    readonly numImages: number,
    readonly seed: number,
    readonly randomFlip: boolean,
  ) {}

  private ensure(epoch: number): void {
    if (epoch === this.cachedEpoch) return;
    const rng = new Rng(this.seed).fork(`epoch-${epoch}`);
    this.perm = rng.permutation(this.numImages);
    this.flips = new Uint8Array(this.numImages);
    if (this.randomFlip) for (let i = 0; i < this.numImages; i++) this.flips[i] = rng.uniform() < 0.5 ? 1 : 0;
    this.cachedEpoch = epoch;
  }

  /** Sample indices and flips of rank `rank`'s micro-batch `step` (0-based within the epoch). */
  batch(epoch: number, step: number, rank: number, worldSize: number, batchSize: number): { indices: Int32Array; flip: Uint8Array } {
    this.ensure(epoch);
    const start = step * batchSize * worldSize + rank * batchSize;
    if (start + batchSize > this.numImages) {
      throw new PfcError('E_ARGUMENT', `GlobalBatchSampler: step ${step} of epoch ${epoch} runs past the ${this.numImages} samples`);
    }
    return { indices: this.perm.slice(start, start + batchSize), flip: this.flips.slice(start, start + batchSize) };
  }
}
