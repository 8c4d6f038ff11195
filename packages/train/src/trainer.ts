import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { PfcError, float32ToFloat16, float16ToFloat32 } from '@pfc/core';
import type { Communicator } from '@pfc/collective';
import { backwardFromEmbeddings, createBackbone, readSafetensors, saveOnnx, saveSafetensors, writeSafetensors, type Backbone, type BackboneConfig, type StateDict } from '@pfc/backbone';
import { evaluateVerification } from '@pfc/eval';
import { CheckpointManager, type CheckpointState } from './checkpoint';
import type { TrainConfig } from './config';
import { GlobalBatchSampler, RecordTrainData, type TrainData } from './data';
import { SpeedLogger } from './logging';
import { PartialFCHead, type TrainHead } from './pfc-head';
import { AdamW, Sgd, clipGradNorm, type HostOptimizer, type OptimizerState } from './optim';
import { PolynomialLRWarmup, stepCounts } from './schedule';
import { SummaryWriter } from './tensorboard';

/** A verification set ready for the network: images NHWC float32 in [-1, 1], rows 2p and 2p+1 form pair p. */
export interface VerificationSet {
  name: string;
  images: Float32Array;
  issame: boolean[];
}

/** Seconds spent in each part of the step, summed over the steps of this run (this rank). */
export interface StepTiming {
  data: number;
  backboneForward: number;
  head: number;
  backboneBackward: number;
  communication: number;
  optimizer: number;
  total: number;
}

/** Options of {@link trainRank}. Everything but `config` defaults to what the config describes. */
export interface TrainRankOptions {
  config: TrainConfig;
  /** Training set (default: `RecordTrainData(config.rec)`). */
  data?: TrainData;
  /** Backbone (default: `backboneFromConfig(config)`, identically seeded on every rank). */
  backbone?: Backbone;
  /** Partial FC head of this rank (default: {@link PartialFCHead} over `@pfc/partial-fc`, from the config). */
  head?: TrainHead;
  /** Verification sets evaluated by rank 0 every `verbose` steps and at the end. */
  verification?: VerificationSet[];
  /** Rank 0's log lines (default: stdout); null for silence. */
  log?: ((line: string) => void) | null;
  /** Stream for the progress bar (drawn only on a TTY; default none). */
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Stop after this global step (a short run; checkpoints and exports still follow the usual rules). */
  maxSteps?: number;
  /** Called on every rank after every micro-batch. */
  onStep?: (info: { globalStep: number; epoch: number; loss: number; lr: number }) => void;
  /** Testing hook: called on every rank after it wrote its part of a checkpoint, before the checkpoint is committed. */
  onCheckpointWritten?: (info: { globalStep: number; rank: number; dir: string }) => void;
  /** Write TensorBoard events (rank 0; default true). */
  tensorboard?: boolean;
  /** Export `model.safetensors` (+ `model.onnx` when the backbone package can) at the end (default true). */
  exportModel?: boolean;
}

/** What {@link trainRank} returns on every rank. */
export interface TrainResult {
  rank: number;
  worldSize: number;
  /** Global step reached. */
  globalStep: number;
  /** Step the run started from (0, or the resumed checkpoint's). */
  startStep: number;
  /** Loss of every micro-batch this run computed, in order (index 0 = step startStep + 1). */
  losses: number[];
  /** Learning rate each of those micro-batches ran at. */
  lrs: number[];
  /** Verification results of rank 0. */
  verification: { name: string; step: number; accuracy: number; accuracyStd: number; xnorm: number }[];
  /** Seconds per part, summed over this run's steps. */
  timing: StepTiming;
  /** Seconds per part of every step of this run (index 0 = the first, which includes kernel warm-up). */
  stepTimings: StepTiming[];
  /** Files written at the end (rank 0). */
  exported: string[];
}

/**
 * The backbone a config names: `r18`…`r200`, `mbf`, `mbf_large`, or `small` (a configurable iResNet, by default
 * layers [1,1,1,1] and widths [16,32,64,128], see `network_options`), with `embedding_size` and `image_size`.
 */
export function backboneSpec(cfg: TrainConfig): BackboneConfig {
  const iresnet: Record<string, number[]> = { r18: [2, 2, 2, 2], r34: [3, 4, 6, 3], r50: [3, 4, 14, 3], r100: [3, 13, 30, 3], r200: [6, 26, 60, 6] };
  if (cfg.network === 'mbf' || cfg.network === 'mbf_large') {
    if (cfg.image_size !== 112) throw new PfcError('E_CONFIG', `config: field 'image_size' must be 112 for network '${cfg.network}', got ${cfg.image_size}`);
    return cfg.network === 'mbf' ? { name: 'mbf', embeddingSize: cfg.embedding_size } : { name: 'mbf', blocks: [2, 8, 12, 4], scale: 4, embeddingSize: cfg.embedding_size };
  }
  const o = cfg.network_options ?? {};
  if (cfg.network === 'small') {
    return { name: 'iresnet', layers: o.layers ?? [1, 1, 1, 1], widths: o.widths ?? [16, 32, 64, 128], embeddingSize: cfg.embedding_size, inputSize: cfg.image_size };
  }
  const layers = iresnet[cfg.network];
  if (!layers) {
    throw new PfcError('E_CONFIG', `config: field 'network' must be one of r18, r34, r50, r100, r200, mbf, mbf_large, small, got ${JSON.stringify(cfg.network)}`, {
      details: { field: 'network' },
    });
  }
  return { name: 'iresnet', layers: o.layers ?? layers, ...(o.widths ? { widths: o.widths } : {}), embeddingSize: cfg.embedding_size, inputSize: cfg.image_size };
}

/** Creates the config's backbone with the run's seed (identical on every rank). */
export function backboneFromConfig(cfg: TrainConfig): Backbone {
  return createBackbone(backboneSpec(cfg), { seed: cfg.seed });
}

/**
 * Embeds images with the backbone in evaluation mode, in batches: [n, S, S, 3] → float32 [n, d].
 */
export function embedImages(backbone: Backbone, images: Float32Array, batchSize = 64): Float32Array {
  const [S] = backbone.inputShape;
  const per = S * S * 3;
  const n = images.length / per;
  const d = backbone.embeddingSize;
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i += batchSize) {
    const m = Math.min(batchSize, n - i);
    const e = tf.tidy(() => backbone.apply(tf.tensor4d(images.subarray(i * per, (i + m) * per), [m, S, S, 3]), { training: false }));
    out.set(e.dataSync() as Float32Array, i * d);
    e.dispose();
  }
  return out;
}

/** Mirrors NHWC images horizontally. */
export function flipImages(images: Float32Array, size: number): Float32Array {
  const per = size * size * 3;
  const out = new Float32Array(images.length);
  for (let k = 0; k < images.length / per; k++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const s = k * per + (y * size + (size - 1 - x)) * 3;
        const t = k * per + (y * size + x) * 3;
        out[t] = images[s]!;
        out[t + 1] = images[s + 1]!;
        out[t + 2] = images[s + 2]!;
      }
    }
  }
  return out;
}

/**
 * Verification of one set as the reference's `verification.test` (flip test: embeddings of the image and its
 * mirror are summed; 10 folds on squared L2 distance).
 */
export function verify(backbone: Backbone, set: VerificationSet): { accuracy: number; accuracyStd: number; xnorm: number } {
  const S = backbone.inputShape[0];
  const e = embedImages(backbone, set.images);
  const f = embedImages(backbone, flipImages(set.images, S));
  const r = evaluateVerification(e, backbone.embeddingSize, set.issame, { flipEmbeddings: f, folds: Math.min(10, set.issame.length) });
  return { accuracy: r.accuracy, accuracyStd: r.accuracyStd, xnorm: r.xnorm };
}

function makeOptimizer(cfg: TrainConfig): HostOptimizer {
  return cfg.optimizer === 'adamw' ? new AdamW(cfg.weight_decay) : new Sgd(cfg.momentum, cfg.weight_decay);
}

function nonFinite(what: string, globalStep: number, value: number): PfcError {
  return new PfcError('E_NON_FINITE', `${what} is ${value} at global step ${globalStep}; training stopped before the optimizer step, no checkpoint was written for this step`, {
    details: { globalStep, value },
  });
}

/**
 * Trains one data-parallel rank: every rank of `comm` calls this with the same config. Backbone gradients are summed
 * over micro-batches (`gradient_acc`), averaged across ranks (all-reduce, in float16 when `fp16`), clipped to a
 * global L2 norm of `clip_grad_norm` (5) and applied by SGD (momentum, weight decay on every parameter) at the
 * `PolynomialLRWarmup` rate, which steps every micro-batch; the Partial FC head holds this rank's class shard and
 * steps with the same rate. Rank 0 logs every `frequent` steps, verifies every `verbose` steps, writes TensorBoard
 * events, and every rank takes part in the atomic checkpoints (every epoch and every `checkpoint_steps`).
 * `config.resume` continues from `<output>/checkpoints/latest` exactly (same world size) or with the bank re-sharded
 * (another world size). A non-finite loss or gradient norm throws `E_NON_FINITE` naming the step, before any update.
 */
export async function trainRank(comm: Communicator, options: TrainRankOptions): Promise<TrainResult> {
  const cfg = options.config;
  const { rank, worldSize } = comm;
  const log = rank === 0 ? (options.log === undefined ? (l: string) => process.stdout.write(`${l}\n`) : options.log) : null;
  const output = cfg.output ?? 'work_dirs/run';
  if (rank === 0) mkdirSync(output, { recursive: true });
  const data = options.data ?? new RecordTrainData(cfg.rec, cfg.image_size, cfg.num_classes);
  if (data.numClasses !== cfg.num_classes) {
    throw new PfcError('E_CONFIG', `config: field 'num_classes' is ${cfg.num_classes} but the training set has ${data.numClasses} classes`, { details: { field: 'num_classes' } });
  }
  const backbone = options.backbone ?? backboneFromConfig(cfg);
  const S = backbone.inputShape[0];
  if (S !== data.imageSize) throw new PfcError('E_CONFIG', `config: field 'image_size' is ${S} for the backbone but the data has ${data.imageSize}-pixel images`);
  const head = options.head ?? new PartialFCHead(comm, cfg, backbone.embeddingSize);
  const B = cfg.batch_size;
  const counts = stepCounts({ numImage: cfg.num_image, batchSize: B, worldSize, numEpoch: cfg.num_epoch, warmupEpoch: cfg.warmup_epoch });
  if (cfg.num_image > data.numImages) {
    throw new PfcError('E_CONFIG', `config: field 'num_image' is ${cfg.num_image} but the training set has ${data.numImages} images`, { details: { field: 'num_image' } });
  }
  const sched = new PolynomialLRWarmup(cfg.lr, counts.warmupStep, counts.totalStep, cfg.lr_power);
  const opt = makeOptimizer(cfg);
  const sampler = new GlobalBatchSampler(cfg.num_image, cfg.seed, cfg.random_flip);
  const ckpt = new CheckpointManager(join(output, 'checkpoints'), cfg.keep_checkpoints);

  // Host copies of the trainable parameters (tfjs layout) and one flat gradient buffer with a view per parameter.
  const vars = backbone.trainableVariables;
  const sizes = vars.map((v) => v.variable.size);
  const total = sizes.reduce((a, b) => a + b, 0);
  const flatParams = new Float32Array(total);
  const flatGrads = new Float32Array(total);
  const params: Float32Array[] = [];
  const grads: Float32Array[] = [];
  {
    let off = 0;
    for (let i = 0; i < vars.length; i++) {
      params.push(flatParams.subarray(off, off + sizes[i]!));
      grads.push(flatGrads.subarray(off, off + sizes[i]!));
      off += sizes[i]!;
    }
  }
  const readParams = () => vars.forEach((v, i) => params[i]!.set(v.variable.dataSync() as Float32Array));
  const writeParams = () =>
    vars.forEach((v, i) => {
      const t = tf.tensor(params[i]!, v.variable.shape, 'float32');
      v.variable.assign(t);
      t.dispose();
    });
  const trainableNames = new Set(vars.map((v) => v.name));
  const buffers = backbone.params.filter((p) => !trainableNames.has(p.name) && (p.kind === 'bn.running_mean' || p.kind === 'bn.running_var')).map((p) => backbone.variable(p.name));

  readParams();
  // Every rank starts from rank 0's weights (they are seeded identically; this makes it a guarantee).
  await comm.broadcast(flatParams, 0);
  writeParams();

  let globalStep = 0;
  let epoch = 0;
  let stepInEpoch = 0;
  if (rank === 0) ckpt.cleanStale();
  await comm.barrier();
  if (cfg.resume) {
    const dir = ckpt.latest();
    if (dir === null) {
      log?.(`resume: no checkpoint in ${ckpt.root}; starting from scratch`);
    } else {
      const st = ckpt.readState(dir);
      if (st.numClasses !== cfg.num_classes || st.embeddingSize !== backbone.embeddingSize) {
        throw new PfcError('E_CHECKPOINT', `${dir}: saved for ${st.numClasses} classes × ${st.embeddingSize}, this run has ${cfg.num_classes} × ${backbone.embeddingSize}`);
      }
      const own = join(dir, `backbone.rank${rank}.safetensors`);
      const sd = readSafetensors(existsSync(own) ? own : join(dir, 'backbone.rank0.safetensors'));
      backbone.loadStateDict(sd.tensors, { source: own });
      readParams();
      const optFile = readSafetensors(join(dir, 'optimizer.safetensors'));
      const slots: OptimizerState['slots'] = {};
      for (const slot of st.optimizer.slots) slots[slot] = vars.map((v) => (optFile.tensors.get(`${slot}.${v.name}`)?.data as Float32Array | undefined) ?? null);
      opt.setState({ kind: st.optimizer.kind as 'sgd' | 'adamw', step: st.optimizer.step, slots });
      await head.load(join(dir, 'head'));
      epoch = st.epoch;
      if (st.worldSize === worldSize && st.batchSize === B) {
        stepInEpoch = st.stepInEpoch;
        globalStep = st.globalStep;
        sched.setState(st.scheduler);
      } else {
        // Another world size: continue at the same data position; the schedule is the new run's.
        stepInEpoch = Math.floor(st.samplesInEpoch / (B * worldSize));
        globalStep = epoch * counts.stepsPerEpoch + stepInEpoch;
        sched.setState({ lastEpoch: globalStep });
      }
      log?.(`resume: ${dir} (saved with ${st.worldSize} rank(s) at step ${st.globalStep}); continuing at epoch ${epoch}, step ${globalStep} on ${worldSize} rank(s)`);
    }
  }
  if (stepInEpoch >= counts.stepsPerEpoch) {
    epoch += 1;
    stepInEpoch = 0;
  }
  const startStep = globalStep;
  const writer = rank === 0 && options.tensorboard !== false ? new SummaryWriter(join(output, 'tensorboard')) : null;
  const speed =
    rank === 0
      ? new SpeedLogger({ frequent: cfg.frequent, batchSize: B, worldSize, totalStep: counts.totalStep, startStep, log: log ?? (() => {}), writer, stream: log ? options.progressStream : undefined })
      : null;
  const result: TrainResult = {
    rank,
    worldSize,
    globalStep,
    startStep,
    losses: [],
    lrs: [],
    verification: [],
    timing: { data: 0, backboneForward: 0, head: 0, backboneBackward: 0, communication: 0, optimizer: 0, total: 0 },
    stepTimings: [],
    exported: [],
  };
  const highest = new Map<string, number>();
  let current: StepTiming = { ...result.timing };
  const timed = async <T>(key: keyof StepTiming, f: () => Promise<T> | T): Promise<T> => {
    const t0 = performance.now();
    const r = await f();
    const dt = (performance.now() - t0) / 1000;
    result.timing[key] += dt;
    current[key] += dt;
    return r;
  };

  const runVerification = (): void => {
    if (rank !== 0 || !options.verification?.length) return;
    for (const set of options.verification) {
      const r = verify(backbone, set);
      const best = Math.max(highest.get(set.name) ?? 0, r.accuracy);
      highest.set(set.name, best);
      log?.(`[${set.name}][${globalStep}]XNorm: ${r.xnorm.toFixed(6)}`);
      log?.(`[${set.name}][${globalStep}]Accuracy-Flip: ${r.accuracy.toFixed(5)}+-${r.accuracyStd.toFixed(5)}`);
      log?.(`[${set.name}][${globalStep}]Accuracy-Highest: ${best.toFixed(5)}`);
      writer?.addScalar(set.name, r.accuracy, globalStep);
      result.verification.push({ name: set.name, step: globalStep, accuracy: r.accuracy, accuracyStd: r.accuracyStd, xnorm: r.xnorm });
    }
  };

  const saveCheckpoint = async (): Promise<void> => {
    const dir = ckpt.begin(globalStep);
    writeSafetensors(join(dir, `backbone.rank${rank}.safetensors`), backbone.getStateDict(), { rank: String(rank) });
    mkdirSync(join(dir, 'head'), { recursive: true });
    await head.save(join(dir, 'head'));
    const os = opt.getState();
    if (rank === 0) {
      const t: StateDict = new Map();
      for (const [slot, arrs] of Object.entries(os.slots)) {
        arrs.forEach((a, i) => {
          if (a) t.set(`${slot}.${vars[i]!.name}`, { dtype: 'float32', shape: [a.length], data: a });
        });
      }
      writeSafetensors(join(dir, 'optimizer.safetensors'), t);
    }
    options.onCheckpointWritten?.({ globalStep, rank, dir });
    await comm.barrier();
    if (rank === 0) {
      const state: CheckpointState = {
        format: 'pfc-train-checkpoint',
        version: 1,
        globalStep,
        epoch,
        stepInEpoch,
        samplesInEpoch: stepInEpoch * B * worldSize,
        worldSize,
        batchSize: B,
        scheduler: sched.getState(),
        optimizer: { kind: os.kind, step: os.step, slots: Object.keys(os.slots) },
        numClasses: cfg.num_classes,
        embeddingSize: backbone.embeddingSize,
        network: cfg.network,
        wallTime: Date.now() / 1000,
      };
      const final = ckpt.commit(globalStep, state);
      log?.(`checkpoint: ${final}`);
    }
    await comm.barrier();
  };

  const maxSteps = options.maxSteps ?? Infinity;
  const acc = cfg.gradient_acc;
  const d = backbone.embeddingSize;
  try {
    outer: while (epoch < cfg.num_epoch) {
      while (stepInEpoch < counts.stepsPerEpoch) {
        if (globalStep >= maxSteps) break outer;
        const tStep = performance.now();
        current = { data: 0, backboneForward: 0, head: 0, backboneBackward: 0, communication: 0, optimizer: 0, total: 0 };
        globalStep += 1;
        const { indices, flip } = sampler.batch(epoch, stepInEpoch, rank, worldSize, B);
        const batch = await timed('data', () => data.load(indices, flip));
        const x = tf.tensor4d(batch.images, [B, S, S, 3]);
        const emb = await timed('backboneForward', async () => {
          const e = backbone.apply(x, { training: true });
          const v = (await e.data()) as Float32Array;
          e.dispose();
          return v;
        });
        const boundary = globalStep % acc === 0;
        const lr = sched.lr;
        const { loss, gradEmbeddings } = await timed('head', async () => {
          try {
            return await head.forwardBackward(emb, batch.labels, boundary ? lr : null);
          } catch (err) {
            x.dispose();
            if (PfcError.is(err, 'E_NON_FINITE')) {
              throw new PfcError('E_NON_FINITE', `${err.message} at global step ${globalStep}; training stopped before the optimizer step, no checkpoint was written for this step`, {
                cause: err,
                details: { ...err.details, globalStep },
              });
            }
            throw err;
          }
        });
        if (!Number.isFinite(loss)) {
          x.dispose();
          throw nonFinite('the loss', globalStep, loss);
        }
        await timed('backboneBackward', () => {
          // The second pass must not move the BatchNorm running statistics again.
          const saved = buffers.map((b) => tf.clone(b));
          // The reference back-propagates world size × d loss/d embeddings and averages across ranks.
          const dEmb = tf.tensor2d(gradEmbeddings, [B, d]);
          const dScaled = tf.mul(dEmb, worldSize);
          const g = backwardFromEmbeddings(backbone, x, dScaled);
          dEmb.dispose();
          dScaled.dispose();
          buffers.forEach((b, i) => b.assign(saved[i]!));
          saved.forEach((s) => s.dispose());
          vars.forEach((v, i) => {
            const t = g.get(v.name)!;
            const a = t.dataSync() as Float32Array;
            const dst = grads[i]!;
            for (let j = 0; j < dst.length; j++) dst[j] = dst[j]! + a[j]!;
          });
          for (const t of g.values()) t.dispose();
        });
        x.dispose();
        if (boundary) {
          await timed('communication', async () => {
            if (cfg.fp16) {
              // The reference's DDP `fp16_compress_hook`: gradients travel as float16 even in fp32 training.
              const h = await comm.allReduce(float32ToFloat16(flatGrads));
              flatGrads.set(float16ToFloat32(h));
            } else {
              await comm.allReduce(flatGrads);
            }
          });
          await timed('optimizer', () => {
            for (let j = 0; j < total; j++) flatGrads[j] = flatGrads[j]! / worldSize;
            const norm = clipGradNorm(grads, cfg.clip_grad_norm);
            if (!Number.isFinite(norm)) throw nonFinite('the backbone gradient norm', globalStep, norm);
            opt.step(params, grads, lr);
            writeParams();
            flatGrads.fill(0);
          });
        }
        sched.step();
        stepInEpoch += 1;
        result.losses.push(loss);
        result.lrs.push(lr);
        current.total = (performance.now() - tStep) / 1000;
        result.timing.total += current.total;
        result.stepTimings.push(current);
        options.onStep?.({ globalStep, epoch, loss, lr });
        speed?.update(globalStep, epoch, loss, lr);
        if (globalStep % cfg.verbose === 0) runVerification();
        if (cfg.checkpoint_steps > 0 && globalStep % cfg.checkpoint_steps === 0 && stepInEpoch < counts.stepsPerEpoch) await saveCheckpoint();
      }
      // End of epoch: the reference saves here.
      await saveCheckpoint();
      epoch += 1;
      stepInEpoch = 0;
    }
    result.globalStep = globalStep;
    if (globalStep % cfg.verbose !== 0) runVerification();
    if (rank === 0 && options.exportModel !== false) {
      result.exported.push(...exportBackbone(backbone, output));
      log?.(`exported: ${result.exported.join(', ')}`);
    }
  } finally {
    speed?.close();
    writer?.close();
    if (!options.data) data.close();
  }
  return result;
}

/** Final export through `@pfc/backbone`: `model.safetensors` (network in the metadata) and `model.onnx`. */
function exportBackbone(backbone: Backbone, output: string): string[] {
  const st = join(output, 'model.safetensors');
  const onnx = join(output, 'model.onnx');
  saveSafetensors(backbone, st);
  saveOnnx(backbone, onnx);
  return [st, onnx];
}
