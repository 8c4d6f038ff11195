import { PfcError, assertArg } from '@pfc/core';

/** Step counts of a run, as `train_v2.py` computes them. */
export interface StepCounts {
  /** Global batch B·W. */
  totalBatch: number;
  /** floor(num_image / (B·W)). */
  stepsPerEpoch: number;
  /** floor(num_image / (B·W)) · warmup_epoch. */
  warmupStep: number;
  /** floor(num_image / (B·W)) · num_epoch. */
  totalStep: number;
}

/**
 * The reference's step arithmetic: total_batch = batch_size·world_size, warmup_step = floor(num_image / total_batch)
 * · warmup_epoch, total_step = floor(num_image / total_batch) · num_epoch. Steps count micro-batches (gradient
 * accumulation does not change them).
 */
export function stepCounts(args: { numImage: number; batchSize: number; worldSize: number; numEpoch: number; warmupEpoch: number }): StepCounts {
  const { numImage, batchSize, worldSize, numEpoch, warmupEpoch } = args;
  for (const [k, v] of Object.entries(args)) {
    assertArg(Number.isInteger(v) && v >= (k === 'warmupEpoch' ? 0 : 1), 'stepCounts', k, v, k === 'warmupEpoch' ? 'a non-negative integer' : 'a positive integer');
  }
  const totalBatch = batchSize * worldSize;
  const stepsPerEpoch = Math.floor(numImage / totalBatch);
  if (stepsPerEpoch < 1) {
    throw new PfcError('E_CONFIG', `stepCounts: num_image (${numImage}) is smaller than one global batch (batch_size ${batchSize} × world size ${worldSize} = ${totalBatch})`, {
      details: { numImage, totalBatch },
    });
  }
  return { totalBatch, stepsPerEpoch, warmupStep: stepsPerEpoch * warmupEpoch, totalStep: stepsPerEpoch * numEpoch };
}

/** Serialisable scheduler state: the number of `step()` calls so far. */
export interface SchedulerState {
  lastEpoch: number;
}

/**
 * The reference's `PolynomialLRWarmup` (`recognition/arcface_torch/lr_scheduler.py`), stepped once per micro-batch:
 * with t = number of `step()` calls, w = warmup iterations, T = total iterations:
 * - t = 0: lr = base (the first iteration runs at the full base LR even with warmup — a reference quirk);
 * - 1 ≤ t ≤ w: lr = base · t / w;
 * - w < t ≤ T: lr = base · (1 − (t − w)/(T − w))^power;
 * - t > T: lr stays at its value for t = T (0).
 * The reference computes the decay multiplicatively from the previous value; that telescopes to the closed form used here.
 */
export class PolynomialLRWarmup {
  private t = 0;

  /**
   * @param baseLr base learning rate (cfg.lr)
   * @param warmupIters w ≥ 0
   * @param totalIters T > w
   * @param power decay exponent (train_v2.py passes none: 1)
   */
  constructor(
    readonly baseLr: number,
    readonly warmupIters: number,
    readonly totalIters: number,
    readonly power = 1,
  ) {
    assertArg(Number.isFinite(baseLr) && baseLr > 0, 'PolynomialLRWarmup', 'baseLr', baseLr, 'a positive number');
    assertArg(Number.isInteger(warmupIters) && warmupIters >= 0, 'PolynomialLRWarmup', 'warmupIters', warmupIters, 'a non-negative integer');
    assertArg(Number.isInteger(totalIters) && totalIters > warmupIters, 'PolynomialLRWarmup', 'totalIters', totalIters, `an integer greater than warmupIters (${warmupIters})`);
    assertArg(Number.isFinite(power) && power > 0, 'PolynomialLRWarmup', 'power', power, 'a positive number');
  }

  /** Learning rate after `t` steps (closed form). */
  lrAt(t: number): number {
    const w = this.warmupIters;
    const T = this.totalIters;
    if (t <= 0) return this.baseLr;
    const tt = Math.min(t, T);
    if (tt <= w) return (this.baseLr * tt) / w;
    return this.baseLr * Math.pow(1 - (tt - w) / (T - w), this.power);
  }

  /** The current learning rate (`get_last_lr()[0]`). */
  get lr(): number {
    return this.lrAt(this.t);
  }

  /** Number of `step()` calls so far. */
  get lastEpoch(): number {
    return this.t;
  }

  /** Advances one micro-batch and returns the new learning rate. */
  step(): number {
    this.t += 1;
    return this.lr;
  }

  getState(): SchedulerState {
    return { lastEpoch: this.t };
  }

  setState(state: SchedulerState): void {
    assertArg(Number.isInteger(state?.lastEpoch) && state.lastEpoch >= 0, 'PolynomialLRWarmup.setState', 'state.lastEpoch', state?.lastEpoch, 'a non-negative integer');
    this.t = state.lastEpoch;
  }
}
