import { optionalRequire } from './require';
import * as tf from '@tensorflow/tfjs-core';
import { PfcError, Progress, assertArg } from '@pfc/core';

/** Pixel normalisation `x' = (x − mean) / std` applied to 0…255 RGB values. */
export interface Normalization {
  mean: number;
  std: number;
}

/** ArcFace / InsightFace models (PyTorch and ONNX exports): `(x − 127.5) / 127.5`, i.e. `(x/255 − 0.5)/0.5`. */
export const ARCFACE_NORMALIZATION: Normalization = { mean: 127.5, std: 127.5 };

/**
 * Anything that turns face crops into embeddings. `embed` receives `n` RGB HWC uint8 crops of
 * `inputSize`×`inputSize` packed in one buffer and resolves to `[n, dim]` float32 (un-normalised: the protocols
 * need the raw norms).
 */
export interface Embedder {
  readonly name: string;
  /** Side of the square input crop (112 for ArcFace models). */
  readonly inputSize: number;
  /** When the model accepts only one batch size (an ONNX graph with a fixed first dimension). */
  readonly fixedBatch?: number;
  embed(images: Uint8Array, n: number): Promise<Float32Array>;
  dispose?(): void | Promise<void>;
}

/** Options shared by the embedder factories. */
export interface EmbedderOptions {
  /** Pixel normalisation (default {@link ARCFACE_NORMALIZATION}). */
  normalization?: Normalization;
  /** Tensor layout the model takes: `'nhwc'` (tfjs default) or `'nchw'` (PyTorch/ONNX). */
  layout?: 'nhwc' | 'nchw';
  /** Input crop side (default 112). */
  inputSize?: number;
  /** Name used in reports. */
  name?: string;
}

/** Converts packed RGB HWC uint8 crops to normalised float32 in the requested layout. */
export function toModelInput(images: Uint8Array, n: number, size: number, norm: Normalization, layout: 'nhwc' | 'nchw'): Float32Array {
  const hw = size * size;
  assertArg(images.length >= n * hw * 3, 'toModelInput', 'images.length', images.length, `≥ n × size² × 3 = ${n * hw * 3}`);
  const out = new Float32Array(n * hw * 3);
  const inv = 1 / norm.std;
  if (layout === 'nhwc') {
    for (let i = 0; i < n * hw * 3; i++) out[i] = (images[i]! - norm.mean) * inv;
  } else {
    for (let b = 0; b < n; b++)
      for (let p = 0; p < hw; p++)
        for (let c = 0; c < 3; c++) out[b * 3 * hw + c * hw + p] = (images[(b * hw + p) * 3 + c]! - norm.mean) * inv;
  }
  return out;
}

/**
 * Wraps a plain function as an {@link Embedder}.
 * @param fn receives `[n, size, size, 3]` (or `[n, 3, size, size]` with `layout: 'nchw'`) float32, normalised by
 *   `normalization` (default `(x − 127.5)/127.5`, values in [−1, 1]), and returns `[n, dim]` float32
 */
export function functionEmbedder(
  fn: (batch: Float32Array, n: number, size: number) => Float32Array | Promise<Float32Array>,
  options: EmbedderOptions = {},
): Embedder {
  const size = options.inputSize ?? 112;
  const norm = options.normalization ?? ARCFACE_NORMALIZATION;
  const layout = options.layout ?? 'nhwc';
  return {
    name: options.name ?? 'function',
    inputSize: size,
    embed: async (images, n) => fn(toModelInput(images, n, size, norm, layout), n, size),
  };
}

/** The duck type of a tfjs model: `@pfc/backbone` models and tfjs-layers models match it. */
export interface TfjsModelLike {
  apply(x: tf.Tensor4D, options: { training: false }): tf.Tensor | tf.Tensor[];
}

/**
 * Wraps a tfjs model (`apply(x, { training: false })` on `[n, size, size, 3]` float32 by default) as an
 * {@link Embedder}; tensors are disposed after each batch.
 */
export function tfjsEmbedder(model: TfjsModelLike, options: EmbedderOptions = {}): Embedder {
  const size = options.inputSize ?? 112;
  const norm = options.normalization ?? ARCFACE_NORMALIZATION;
  const layout = options.layout ?? 'nhwc';
  return {
    name: options.name ?? 'tfjs',
    inputSize: size,
    embed: async (images, n) => {
      const input = toModelInput(images, n, size, norm, layout);
      const shape: [number, number, number, number] = layout === 'nhwc' ? [n, size, size, 3] : [n, 3, size, size];
      const out = tf.tidy(() => {
        const y = model.apply(tf.tensor4d(input, shape), { training: false });
        const t = Array.isArray(y) ? y[0]! : y;
        return tf.reshape(t, [n, -1]);
      });
      try {
        return (await out.data()) as Float32Array;
      } finally {
        out.dispose();
      }
    },
  };
}

/** Options of {@link onnxEmbedder}. */
export interface OnnxEmbedderOptions extends EmbedderOptions {
  /** Input name (default: the graph's first input). */
  inputName?: string;
  /** Output name (default: the graph's first output). */
  outputName?: string;
  /** onnxruntime intra-op threads (default: onnxruntime's choice). */
  threads?: number;
}

type Ort = typeof import('onnxruntime-node', { with: { 'resolution-mode': 'require' } });

/** Loads `onnxruntime-node` lazily (an optional dependency); `E_BACKEND_UNAVAILABLE` when it is missing. */
export function loadOnnxRuntime(): Ort {
  try {
    return optionalRequire<Ort>('onnxruntime-node');
  } catch (cause) {
    throw new PfcError(
      'E_BACKEND_UNAVAILABLE',
      `ONNX models need the optional dependency 'onnxruntime-node', which failed to load (${(cause as Error).message}). Install it with: npm install onnxruntime-node --onnxruntime-node-install=skip`,
      { cause },
    );
  }
}

/**
 * An ONNX face model through onnxruntime-node (CPU). Reads the input name and shape from the graph: NCHW
 * `[batch, 3, size, size]` float32 (NHWC `[batch, size, size, 3]` is recognised too); a fixed batch dimension is
 * respected by running and padding batches of exactly that size. Default normalisation `(x − 127.5)/127.5`
 * (InsightFace exports); models trained otherwise (e.g. `(x − 127)/128`) need `normalization`.
 * @param path the `.onnx` file
 */
export async function onnxEmbedder(path: string, options: OnnxEmbedderOptions = {}): Promise<Embedder> {
  const ort = loadOnnxRuntime();
  let session: Awaited<ReturnType<Ort['InferenceSession']['create']>>;
  try {
    session = await ort.InferenceSession.create(path, options.threads ? { intraOpNumThreads: options.threads } : {});
  } catch (cause) {
    throw new PfcError('E_MODEL_LOAD', `cannot load ONNX model '${path}': ${(cause as Error).message}`, { cause, details: { file: path } });
  }
  const inputName = options.inputName ?? session.inputNames[0]!;
  const outputName = options.outputName ?? session.outputNames[0]!;
  const meta = (session.inputMetadata ?? []).find((m) => m.name === inputName) as { shape?: readonly (number | string)[] } | undefined;
  const shape = meta?.shape ?? [];
  let layout = options.layout ?? 'nchw';
  let size = options.inputSize ?? 112;
  if (shape.length === 4) {
    if (shape[1] === 3 && typeof shape[2] === 'number') {
      layout = options.layout ?? 'nchw';
      size = options.inputSize ?? shape[2];
    } else if (shape[3] === 3 && typeof shape[1] === 'number') {
      layout = options.layout ?? 'nhwc';
      size = options.inputSize ?? shape[1];
    }
  } else if (shape.length !== 0) {
    throw new PfcError('E_MODEL_INPUT', `ONNX model '${path}': input '${inputName}' has shape [${shape}], expected 4-D [batch, 3, H, W]`, { details: { file: path, shape } });
  }
  const fixedBatch = typeof shape[0] === 'number' && shape[0] > 0 ? shape[0] : undefined;
  const norm = options.normalization ?? ARCFACE_NORMALIZATION;
  const run = async (input: Float32Array, b: number): Promise<Float32Array> => {
    const dims = layout === 'nchw' ? [b, 3, size, size] : [b, size, size, 3];
    const out = await session.run({ [inputName]: new ort.Tensor('float32', input, dims) });
    const t = out[outputName];
    if (!t) throw new PfcError('E_MODEL_OUTPUT', `ONNX model '${path}' produced no output '${outputName}'`);
    return t.data as Float32Array;
  };
  return {
    name: options.name ?? path,
    inputSize: size,
    ...(fixedBatch !== undefined ? { fixedBatch } : {}),
    embed: async (images, n) => {
      const input = toModelInput(images, n, size, norm, layout);
      if (fixedBatch === undefined || fixedBatch === n) return run(input, n);
      const per = size * size * 3;
      let dim = 0;
      const parts: Float32Array[] = [];
      for (let s = 0; s < n; s += fixedBatch) {
        const b = Math.min(fixedBatch, n - s);
        const chunk = new Float32Array(fixedBatch * per);
        chunk.set(input.subarray(s * per, (s + b) * per));
        const y = await run(chunk, fixedBatch);
        dim = y.length / fixedBatch;
        parts.push(y.subarray(0, b * dim));
      }
      const out = new Float32Array(n * dim);
      let off = 0;
      for (const p of parts) {
        out.set(p, off);
        off += p.length;
      }
      return out;
    },
    dispose: async () => {
      await session.release();
    },
  };
}

/** Options of {@link embedImages}. */
export interface EmbedImagesOptions {
  /** Images per model call (default 64; a fixed-batch model's own size wins). */
  batchSize?: number;
  /** Also embed the horizontally mirrored images (flip test). Default true. */
  flip?: boolean;
  /** Progress label; `false` for silence. */
  progress?: string | false;
  /** Stream for the progress output (default stderr). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
}

/** Result of {@link embedImages}. */
export interface EmbeddedImages {
  /** [n, dim] raw embeddings of the images. */
  embeddings: Float32Array;
  /** [n, dim] raw embeddings of the mirrored images (when `flip`). */
  flipEmbeddings?: Float32Array;
  dim: number;
  /** Images (original + mirrored) per second. */
  imagesPerSecond: number;
}

/** Mirrors packed RGB HWC crops left-right. */
export function flipBatch(images: Uint8Array, n: number, size: number): Uint8Array {
  const out = new Uint8Array(n * size * size * 3);
  for (let b = 0; b < n; b++)
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++) {
        const s = ((b * size + y) * size + x) * 3;
        const d = ((b * size + y) * size + (size - 1 - x)) * 3;
        out[d] = images[s]!;
        out[d + 1] = images[s + 1]!;
        out[d + 2] = images[s + 2]!;
      }
  return out;
}

/**
 * Embeds `n` crops in batches, optionally with their mirrors, showing a progress bar with images/s.
 * @param images packed RGB HWC uint8 crops of `embedder.inputSize`² (n × size × size × 3), or a function giving
 *   the crops of images [start, end) (so large sets need not be held decoded in memory)
 */
export async function embedImages(
  embedder: Embedder,
  images: Uint8Array | ((start: number, end: number) => Promise<Uint8Array>),
  n: number,
  options: EmbedImagesOptions = {},
): Promise<EmbeddedImages> {
  const size = embedder.inputSize;
  const per = size * size * 3;
  const batch = embedder.fixedBatch ?? options.batchSize ?? 64;
  assertArg(Number.isInteger(batch) && batch > 0, 'embedImages', 'batchSize', batch, 'a positive integer');
  if (images instanceof Uint8Array) assertArg(images.length === n * per, 'embedImages', 'images.length', images.length, `n × ${size} × ${size} × 3 = ${n * per}`);
  const flip = options.flip ?? true;
  const progress = new Progress({ total: n * (flip ? 2 : 1), label: options.progress === false ? '' : options.progress ?? `embed ${embedder.name}`, unit: 'img', silent: options.progress === false, ...(options.stream ? { stream: options.stream } : {}) });
  const start = Date.now();
  let emb: Float32Array | null = null;
  let embFlip: Float32Array | null = null;
  let dim = 0;
  // with a loader, the next batch is decoded while the model runs on this one
  const load = (s: number) => (images instanceof Uint8Array ? Promise.resolve(images.subarray(s * per, Math.min(n, s + batch) * per)) : images(s, Math.min(n, s + batch)));
  let next: Promise<Uint8Array> | null = n > 0 ? load(0) : null;
  for (let s = 0; s < n; s += batch) {
    const e = Math.min(n, s + batch);
    const chunk = await next!;
    next = e < n ? load(e) : null;
    // a failed prefetch surfaces when awaited, not as an unhandled rejection meanwhile
    next?.catch(() => undefined);
    const y = await embedder.embed(chunk, e - s);
    if (emb === null) {
      dim = y.length / (e - s);
      assertArg(Number.isInteger(dim) && dim > 0, 'embedImages', 'embedding output length', y.length, `a multiple of the batch ${e - s}`);
      emb = new Float32Array(n * dim);
      if (flip) embFlip = new Float32Array(n * dim);
    }
    emb.set(y.subarray(0, (e - s) * dim), s * dim);
    progress.tick(e - s);
    if (flip) {
      const yf = await embedder.embed(flipBatch(chunk, e - s, size), e - s);
      embFlip!.set(yf.subarray(0, (e - s) * dim), s * dim);
      progress.tick(e - s);
    }
  }
  progress.stop();
  const secs = (Date.now() - start) / 1000;
  return {
    embeddings: emb ?? new Float32Array(0),
    ...(embFlip ? { flipEmbeddings: embFlip } : {}),
    dim,
    imagesPerSecond: secs > 0 ? (n * (flip ? 2 : 1)) / secs : 0,
  };
}
