import { Worker } from 'node:worker_threads';
import { PfcError, Rng, assertArg, workerScript } from '@pfc/core';
import type { FaceDataset } from './dataset';
import { decodeBatch } from './decode';
import type { DecodeRequest, DecodeResult } from './decode';
import type { DecoderName } from './image';
import { DistributedSampler } from './sampler';

export interface FaceLoaderOptions {
  /** Samples per batch on this rank. */
  batchSize: number;
  /** Seed of the shuffle (shared by all ranks) and of the flips (default 0). */
  seed?: number;
  /** This rank and the number of ranks (default 0 of 1). */
  rank?: number;
  worldSize?: number;
  /** Shuffle every epoch (default true). */
  shuffle?: boolean;
  /** Drop the last short batch of an epoch (default true, as arcface_torch's loader). */
  dropLast?: boolean;
  /** Random horizontal flip with p = 0.5 (default true). */
  flip?: boolean;
  /** Expected image size [height, width] (default [112, 112]); other sizes are corrupt samples. */
  imageSize?: readonly [number, number];
  /** Decode worker threads (default 2); 0 decodes in the calling thread. */
  workers?: number;
  /** Batches decoded ahead (default 2 × max(workers, 1)). */
  prefetch?: number;
  /** A sample that cannot be read or decoded: throw (default) or leave it out of its batch and record it. */
  onCorrupt?: 'error' | 'skip';
  /** Image decoder (default 'sharp', falling back to the pure-JS decoders when sharp cannot load). */
  decoder?: DecoderName;
}

/** Where a loader is in training: the next batch to produce is `step` of `epoch`. Save it to resume exactly. */
export interface LoaderPosition {
  epoch: number;
  step: number;
}

/** A sample left out in skip mode. */
export interface SkippedSample {
  key: number | string;
  /** `file key K at byte offset O` (or the image path). */
  where: string;
  code: string;
  message: string;
  epoch: number;
  step: number;
}

/** One batch. `images` is float32 NHWC in [-1, 1]; `size` may be below `batchSize` only in skip mode. */
export interface Batch {
  /** `size × H × W × 3` float32. */
  images: Float32Array;
  /** `size` int32 class ids. */
  labels: Int32Array;
  keys: Array<number | string>;
  size: number;
  epoch: number;
  step: number;
  /** The position after this batch: pass it to resume from the next batch. */
  next: LoaderPosition;
  /** Samples of this batch left out (skip mode). */
  skipped: SkippedSample[];
}

interface Pending {
  resolve: (r: DecodeResult) => void;
  reject: (e: unknown) => void;
  worker: number;
}

/**
 * Batches of a {@link FaceDataset} for one rank: a {@link DistributedSampler} order per epoch, records read in the
 * calling thread, decode + flip + normalize in a `worker_threads` pool with a bounded prefetch queue. The batches
 * depend only on (dataset, options, epoch, step), never on timing or the number of workers, so training resumes
 * exactly from a saved {@link LoaderPosition}.
 */
export class FaceLoader {
  readonly dataset: FaceDataset;
  readonly sampler: DistributedSampler;
  readonly batchSize: number;
  /** Batches per epoch on this rank. */
  readonly stepsPerEpoch: number;
  /** Every sample skipped so far (skip mode), in order. */
  readonly skipped: SkippedSample[] = [];
  private readonly opts: Required<Omit<FaceLoaderOptions, 'rank' | 'worldSize'>> & { rank: number; worldSize: number };
  private workers: Worker[] = [];
  private inflight: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  constructor(dataset: FaceDataset, options: FaceLoaderOptions) {
    const workers = options.workers ?? 2;
    assertArg(Number.isInteger(options.batchSize) && options.batchSize > 0, 'FaceLoader', 'batchSize', options.batchSize, 'a positive integer');
    assertArg(Number.isInteger(workers) && workers >= 0, 'FaceLoader', 'workers', workers, 'a non-negative integer');
    this.opts = {
      seed: 0,
      rank: 0,
      worldSize: 1,
      shuffle: true,
      dropLast: true,
      flip: true,
      imageSize: [112, 112],
      prefetch: 2 * Math.max(workers, 1),
      onCorrupt: 'error',
      decoder: 'sharp',
      ...options,
      workers,
    };
    assertArg(Number.isInteger(this.opts.prefetch) && this.opts.prefetch >= 1, 'FaceLoader', 'prefetch', this.opts.prefetch, 'a positive integer');
    this.dataset = dataset;
    this.batchSize = options.batchSize;
    this.sampler = new DistributedSampler(dataset.length, {
      numReplicas: this.opts.worldSize,
      rank: this.opts.rank,
      shuffle: this.opts.shuffle,
      seed: this.opts.seed,
    });
    const n = this.sampler.numSamples;
    this.stepsPerEpoch = this.opts.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
    if (this.stepsPerEpoch === 0) {
      throw new PfcError(
        'E_BATCH_SIZE',
        `FaceLoader: batchSize ${this.batchSize} exceeds the ${n} samples of rank ${this.opts.rank}/${this.opts.worldSize} with dropLast: no batch per epoch`,
        { details: { batchSize: this.batchSize, numSamples: n } },
      );
    }
  }

  /** Dataset indices of batch `step` of `epoch` (before any skipping). */
  batchIndices(epoch: number, step: number): Int32Array {
    assertArg(Number.isInteger(step) && step >= 0 && step < this.stepsPerEpoch, 'FaceLoader.batchIndices', 'step', step, `an integer in [0, ${this.stepsPerEpoch})`);
    const idx = this.sampler.indices(epoch);
    return idx.slice(step * this.batchSize, Math.min((step + 1) * this.batchSize, idx.length));
  }

  /** The position after `pos`'s batch. */
  advance(pos: LoaderPosition): LoaderPosition {
    return pos.step + 1 >= this.stepsPerEpoch ? { epoch: pos.epoch + 1, step: 0 } : { epoch: pos.epoch, step: pos.step + 1 };
  }

  /** The batches of one epoch from `startStep` on, decoded ahead up to `prefetch` batches. */
  async *epoch(epoch: number, startStep = 0): AsyncGenerator<Batch> {
    assertArg(Number.isInteger(startStep) && startStep >= 0 && startStep <= this.stepsPerEpoch, 'FaceLoader.epoch', 'startStep', startStep, `an integer in [0, ${this.stepsPerEpoch}]`);
    const order = this.sampler.indices(epoch);
    const queue: Array<Promise<Batch>> = [];
    let nextStep = startStep;
    const fill = () => {
      while (queue.length < this.opts.prefetch && nextStep < this.stepsPerEpoch) {
        const p = this.prepare(order, epoch, nextStep++);
        p.catch(() => undefined); // handled when awaited in order
        queue.push(p);
      }
    };
    try {
      fill();
      while (queue.length > 0) {
        const batch = await queue.shift()!;
        fill();
        yield batch;
      }
    } finally {
      // an abandoned iteration must not leave rejections unobserved
      for (const p of queue) p.catch(() => undefined);
    }
  }

  /** Batches from `from` on, epoch after epoch, until `until` (exclusive) or forever. */
  async *iterate(from: LoaderPosition = { epoch: 0, step: 0 }, until?: LoaderPosition): AsyncGenerator<Batch> {
    for (let e = from.epoch; ; e++) {
      for await (const b of this.epoch(e, e === from.epoch ? from.step : 0)) {
        if (until && (b.epoch > until.epoch || (b.epoch === until.epoch && b.step >= until.step))) return;
        yield b;
      }
    }
  }

  /** Stops the workers. The loader cannot be used afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    const ws = this.workers;
    this.workers = [];
    for (const [, p] of this.pending) p.reject(new PfcError('E_LOADER_CLOSED', 'FaceLoader: closed while a batch was being decoded'));
    this.pending.clear();
    await Promise.all(ws.map((w) => w.terminate()));
  }

  private async prepare(order: Int32Array, epoch: number, step: number): Promise<Batch> {
    if (this.closed) throw new PfcError('E_LOADER_CLOSED', 'FaceLoader: used after close()');
    const [height, width] = this.opts.imageSize;
    const start = step * this.batchSize;
    const idx = order.subarray(start, Math.min(start + this.batchSize, order.length));
    const flipRng = new Rng(this.opts.seed).fork(`flip:${this.opts.rank}:${epoch}:${step}`);
    const skipped: SkippedSample[] = [];
    const images: Uint8Array[] = [];
    const where: string[] = [];
    const labels: number[] = [];
    const keys: Array<number | string> = [];
    const flipsAll: number[] = [];
    for (let i = 0; i < idx.length; i++) {
      // the flip draw happens for every slot, so skipping a sample does not shift the others' flips
      const flip = this.opts.flip && flipRng.uniform() < 0.5 ? 1 : 0;
      const di = idx[i]!;
      try {
        const s = this.dataset.read(di);
        images.push(s.image);
        where.push(s.where);
        labels.push(s.label);
        keys.push(s.key);
        flipsAll.push(flip);
      } catch (e) {
        this.corrupt(e, this.dataset.keyAt(di), String(this.dataset.keyAt(di)), epoch, step, skipped);
      }
    }
    const offsets = new Int32Array(images.length + 1);
    for (let i = 0; i < images.length; i++) offsets[i + 1] = offsets[i]! + images[i]!.length;
    const data = new Uint8Array(offsets[images.length]!);
    for (let i = 0; i < images.length; i++) data.set(images[i]!, offsets[i]);
    const req: DecodeRequest = { id: 0, data, offsets, where, flips: Uint8Array.from(flipsAll), height, width, decoder: this.opts.decoder };
    const res = this.opts.workers === 0 ? await decodeBatch(req) : await this.dispatch(req);
    for (const err of res.errors) {
      const e = new PfcError(err.code as `E_${string}`, err.message, { details: { key: keys[err.index], where: where[err.index] } });
      this.corrupt(e, keys[err.index]!, where[err.index]!, epoch, step, skipped);
    }
    const batch: Batch = { images: res.images, labels: Int32Array.from(labels), keys, size: keys.length, epoch, step, next: this.advance({ epoch, step }), skipped };
    return res.errors.length === 0 ? batch : compact(batch, res.ok, height * width * 3);
  }

  private corrupt(e: unknown, key: number | string, where: string, epoch: number, step: number, into: SkippedSample[]): void {
    if (this.opts.onCorrupt === 'error' || !(e instanceof PfcError)) throw e;
    const s: SkippedSample = { key, where: typeof e.details.where === 'string' ? e.details.where : where, code: e.code, message: e.message, epoch, step };
    into.push(s);
    this.skipped.push(s);
  }

  private startWorkers(): void {
    const ws = workerScript(__filename, __dirname, 'decode-worker');
    for (let i = 0; i < this.opts.workers; i++) {
      const w = new Worker(ws.entry, { eval: ws.eval, execArgv: ws.execArgv });
      w.unref();
      w.on('message', (msg: DecodeResult & { fatal?: string }) => this.onMessage(i, msg));
      w.on('error', (err) => this.failWorker(i, err));
      w.on('exit', (code) => {
        if (!this.closed) this.failWorker(i, new Error(`decode worker ${i} exited with code ${code}`));
      });
      this.workers.push(w);
      this.inflight.push(0);
    }
  }

  private dispatch(req: DecodeRequest): Promise<DecodeResult> {
    if (this.workers.length === 0) this.startWorkers();
    let best = 0;
    for (let i = 1; i < this.inflight.length; i++) if (this.inflight[i]! < this.inflight[best]!) best = i;
    const id = this.nextId++;
    return new Promise<DecodeResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker: best });
      // a worker with work in flight keeps the process alive; an idle one does not
      if (this.inflight[best]!++ === 0) this.workers[best]!.ref();
      this.workers[best]!.postMessage({ ...req, id }, [req.data.buffer as ArrayBuffer]);
    });
  }

  private onMessage(worker: number, msg: DecodeResult & { fatal?: string }): void {
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (--this.inflight[worker]! === 0) this.workers[worker]?.unref();
    if (msg.fatal !== undefined) p.reject(new PfcError('E_LOADER_WORKER', `FaceLoader: decode worker ${worker} failed: ${msg.fatal}`));
    else p.resolve(msg);
  }

  private failWorker(worker: number, err: Error): void {
    for (const [id, p] of this.pending) {
      if (p.worker !== worker) continue;
      this.pending.delete(id);
      p.reject(new PfcError('E_LOADER_WORKER', `FaceLoader: decode worker ${worker} failed: ${err.message}`, { cause: err }));
    }
  }
}

function compact(b: Batch, ok: Uint8Array, stride: number): Batch {
  const keep: number[] = [];
  for (let i = 0; i < ok.length; i++) if (ok[i] === 1) keep.push(i);
  const images = new Float32Array(keep.length * stride);
  keep.forEach((src, dst) => images.set(b.images.subarray(src * stride, (src + 1) * stride), dst * stride));
  return {
    ...b,
    images,
    labels: Int32Array.from(keep.map((i) => b.labels[i]!)),
    keys: keep.map((i) => b.keys[i]!),
    size: keep.length,
  };
}
