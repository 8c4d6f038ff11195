import { PfcError, Rng, assertArg } from '@pfc/core';
import type { Communicator } from '@pfc/collective';
import { loadBank, saveBank, type BankManifest } from './checkpoint';
import { ClassBank, type BankStorage, type SgdOptions } from './bank';
import { resolveMargin, targetLogit, targetSlope, type MarginOptions, type ResolvedMargin } from './margin';
import { jsMatmul, tfMatmul, transpose, type FloatArray, type MatmulFn } from './matmul';
import { forcedCenters, localizeLabels, sampleCenters, type Sampled } from './sampling';
import { numSampleOf, shardOf } from './sharding';

/** Options of {@link PartialFC}. */
export interface PartialFCOptions {
  /** Total number of classes C (all ranks). */
  numClasses: number;
  /** Embedding size D. */
  embeddingSize: number;
  /** Fraction of each shard's class centers used per step, 0 < r ≤ 1 (1 = model parallel, no sampling). Default 1. */
  sampleRate?: number;
  /** Margin-softmax settings (ArcFace / CosFace as the reference's `CombinedMarginLoss`). */
  margin: MarginOptions;
  /** The rank group; rank r owns the classes of {@link shardOf}. */
  comm: Communicator;
  /** Seed of the weight init and of the sampling keys. Default 0. */
  seed?: number;
  /** Element type of the host-memory bank (weights + momentum). Default `float32` (`float64` when dtype is float64). */
  storage?: BankStorage;
  /**
   * Compute precision. `float32` (default) runs the two big matmuls on the active tfjs backend; `float64` runs
   * everything in plain typed-array loops (parity checks against float64 reference vectors).
   */
  dtype?: 'float32' | 'float64';
  /** Matmul engine for float32: `tfjs` (default) or `js` loops. float64 always uses `js`. */
  matmul?: 'tfjs' | 'js';
  /**
   * Bank optimizer semantics. `sparse` (default, the original Partial FC memory bank): only sampled rows' weights and
   * momentum move. `dense` (the reference V2): every row's momentum and weight decay apply each step.
   */
  update?: 'sparse' | 'dense';
  /** SGD momentum μ. Default 0.9. */
  momentum?: number;
  /** SGD weight decay. Default 5e-4. */
  weightDecay?: number;
  /**
   * Weight init, per class and independent of the world size: `normal` = Normal(0, 0.01) (V2, default);
   * `uniform` = U(-1/√D, 1/√D) (PFC-2020's Kaiming-uniform; 5× faster to draw); `zeros`.
   */
  init?: 'normal' | 'uniform' | 'zeros';
  /** Sampled rows per block of the matmuls (bounds tensor memory). Default 8192. */
  blockRows?: number;
  /**
   * Keep the normalised sampled centers of a step from the forward to the backward (`true`), or gather and normalise
   * them again block by block in the backward (`false`: per-step memory O(blockRows·D) instead of O(K·D), for one
   * more pass over the sampled rows). Default: keep them while K·D ≤ 64 Mi elements (256 MiB in float32).
   */
  cacheSampled?: boolean;
}

/** Per-step options of {@link PartialFC.forwardBackward}. */
export interface StepOptions {
  /**
   * Apply one SGD step to the bank with this learning rate after the gradients are computed. Gradients accumulated
   * by earlier `accumulate` calls are added to this call's and applied with it (the end of an accumulation window).
   */
  lr?: number;
  /**
   * Without `lr`: add this step's gradient of the sampled centers to the bank's accumulated gradient instead of
   * discarding it; {@link PartialFC.applyUpdate} applies the sum (gradient accumulation over micro-batches).
   * Ignored with `lr` (that call accumulates and applies). Default false.
   */
  accumulate?: boolean;
  /** Injected uniform sampling keys of this rank (numLocal values, e.g. a vector's `rand_perm_r{r}.npy`). */
  keys?: ArrayLike<number>;
  /** Forced sampled set: global class ids (the vectors' `sample_index`). Every positive must be in it. */
  sampleIndex?: ArrayLike<number>;
  /** Return the gradient of the sampled bank rows (`gradWeight`, [K, D]). */
  returnGradWeight?: boolean;
  /** Override the bank update semantics for this step (default: the constructor's `update`). */
  update?: 'sparse' | 'dense';
  /** Return the clamped cosine and margin logits ([N, K], row-major; for parity checks). */
  returnLogits?: boolean;
}

/** What one {@link PartialFC.forwardBackward} produces on a rank. */
export interface StepResult {
  /** Mean margin-softmax cross-entropy over the global batch (identical on every rank). */
  loss: number;
  /**
   * d(loss)/d(this rank's raw embeddings), [B, D]. The reference's `.grad` is `worldSize` times this (its AllGather
   * backward multiplies by W and DDP divides by W again).
   */
  gradEmbeddings: FloatArray;
  /** Sorted local class ids of the sampled centers, [K]. */
  sampledIndex: Int32Array;
  /** Labels of the global batch as columns of the sampled set (-1 = other shard), [N]. */
  labels: Int32Array;
  /** Whether the sampled set is exactly the positives (more distinct positives than numSample). */
  positivesOnly: boolean;
  /** Gradient of the raw sampled bank rows, [K, D] (with `returnGradWeight`). */
  gradWeight?: FloatArray;
  /** Clamped cosines [N, K] (with `returnLogits`). */
  cosLogits?: FloatArray;
  /** Scaled logits after margin and filter [N, K] (with `returnLogits`). */
  marginLogits?: FloatArray;
}

const EPS = 1e-12;
const INIT_BLOCK = 4096;
/** Largest K·D for which the normalised sampled centers stay cached between forward and backward by default. */
const CACHE_SAMPLED_ELEMENTS = 64 * 1024 * 1024;
const HEADER = 6;

/**
 * Partial FC: the class-center shard of this rank lives in host memory ({@link ClassBank}); each step samples a
 * fraction of it, computes the ArcFace/CosFace margin softmax over the sampled centers of all ranks and returns the
 * loss and the embedding gradient. Work per step is O(N·K·D) with K the sampled rows, independent of numClasses
 * (except the `dense` update, which touches every row as the reference V2 does).
 */
export class PartialFC {
  readonly numClasses: number;
  readonly embeddingSize: number;
  readonly sampleRate: number;
  readonly numLocal: number;
  readonly classStart: number;
  readonly numSample: number;
  readonly margin: ResolvedMargin;
  readonly comm: Communicator;
  readonly dtype: 'float32' | 'float64';
  readonly update: 'sparse' | 'dense';
  readonly momentum: number;
  readonly weightDecay: number;
  readonly seed: number;
  readonly bank: ClassBank;
  /** Number of SGD steps applied to the bank. */
  stepCount = 0;
  /** Sampling generator of this rank (saved in checkpoints). */
  rng: Rng;
  private batchSize: number | null = null;
  private readonly matmul: MatmulFn;
  private readonly cacheSampled: boolean | undefined;
  private readonly blockRows: number;
  private keyScratch: Float64Array<ArrayBufferLike> | null = null;
  /** Accumulated gradient per local row (float64, [D] each), rows in insertion order. */
  private readonly accumulated = new Map<number, Float64Array>();
  private readonly spareRows: Float64Array[] = [];
  private selectScratch: Float64Array<ArrayBufferLike> | null = null;

  constructor(options: PartialFCOptions) {
    const o = options;
    assertArg(o !== null && typeof o === 'object', 'PartialFC', 'options', o, 'an options object');
    assertArg(Number.isInteger(o.numClasses) && o.numClasses >= 1, 'PartialFC', 'numClasses', o.numClasses, 'a positive integer');
    assertArg(Number.isInteger(o.embeddingSize) && o.embeddingSize >= 1, 'PartialFC', 'embeddingSize', o.embeddingSize, 'a positive integer');
    const sampleRate = o.sampleRate ?? 1;
    assertArg(Number.isFinite(sampleRate) && sampleRate > 0 && sampleRate <= 1, 'PartialFC', 'sampleRate', sampleRate, 'a number in (0, 1]');
    assertArg(!!o.comm && typeof o.comm.allGather === 'function', 'PartialFC', 'comm', o.comm, 'a Communicator');
    const dtype = o.dtype ?? 'float32';
    assertArg(dtype === 'float32' || dtype === 'float64', 'PartialFC', 'dtype', dtype, "'float32' or 'float64'");
    const storage = o.storage ?? (dtype === 'float64' ? 'float64' : 'float32');
    assertArg(['float16', 'float32', 'float64'].includes(storage), 'PartialFC', 'storage', storage, "'float16', 'float32' or 'float64'");
    const update = o.update ?? 'sparse';
    assertArg(update === 'sparse' || update === 'dense', 'PartialFC', 'update', update, "'sparse' or 'dense'");
    const momentum = o.momentum ?? 0.9;
    const weightDecay = o.weightDecay ?? 5e-4;
    assertArg(Number.isFinite(momentum) && momentum >= 0, 'PartialFC', 'momentum', momentum, 'a finite number >= 0');
    assertArg(Number.isFinite(weightDecay) && weightDecay >= 0, 'PartialFC', 'weightDecay', weightDecay, 'a finite number >= 0');
    const blockRows = o.blockRows ?? 8192;
    assertArg(Number.isInteger(blockRows) && blockRows >= 1, 'PartialFC', 'blockRows', blockRows, 'a positive integer');
    const matmul = o.matmul ?? 'tfjs';
    assertArg(matmul === 'tfjs' || matmul === 'js', 'PartialFC', 'matmul', matmul, "'tfjs' or 'js'");

    this.margin = resolveMargin(o.margin);
    this.numClasses = o.numClasses;
    this.embeddingSize = o.embeddingSize;
    this.sampleRate = sampleRate;
    this.comm = o.comm;
    const shard = shardOf(o.numClasses, o.comm.worldSize, o.comm.rank);
    this.numLocal = shard.numLocal;
    this.classStart = shard.classStart;
    this.numSample = numSampleOf(sampleRate, shard.numLocal);
    this.dtype = dtype;
    this.update = update;
    this.momentum = momentum;
    this.weightDecay = weightDecay;
    this.blockRows = blockRows;
    this.seed = o.seed ?? 0;
    this.matmul = dtype === 'float64' || matmul === 'js' ? jsMatmul : tfMatmul;
    assertArg(o.cacheSampled === undefined || typeof o.cacheSampled === 'boolean', 'PartialFC', 'cacheSampled', o.cacheSampled, 'a boolean');
    this.cacheSampled = o.cacheSampled;
    this.rng = new Rng(this.seed).fork(`sampling/rank${o.comm.rank}`);
    this.bank = new ClassBank(shard.numLocal, o.embeddingSize, storage);
    const init = o.init ?? 'normal';
    assertArg(['normal', 'uniform', 'zeros'].includes(init), 'PartialFC', 'init', init, "'normal', 'uniform' or 'zeros'");
    if (init !== 'zeros') this.initRandom(init);
  }

  /** Random init per class from blocks of 4096 global classes, so the init does not depend on the world size. */
  private initRandom(kind: 'normal' | 'uniform'): void {
    const bound = 1 / Math.sqrt(this.embeddingSize);
    const d = this.embeddingSize;
    const row = new Float64Array(d);
    const base = new Rng(this.seed).fork('init');
    const end = this.classStart + this.numLocal;
    for (let b = Math.floor(this.classStart / INIT_BLOCK); b * INIT_BLOCK < end; b++) {
      const rng = base.fork(b);
      const lo = b * INIT_BLOCK;
      const hi = Math.min(lo + INIT_BLOCK, this.numClasses);
      for (let c = lo; c < hi && c < end; c++) {
        if (kind === 'normal') for (let j = 0; j < d; j++) row[j] = rng.normal(0, 0.01);
        else for (let j = 0; j < d; j++) row[j] = (rng.nextUint32() * 4.656612873077393e-10 - 1) * bound; // 32 random bits suffice
        if (c >= this.classStart) this.bank.writeWeight(c - this.classStart, row);
      }
    }
  }

  /**
   * Sets this rank's shard from the full weight matrix [C, D] (row-major; rows outside the shard are ignored) and
   * zeroes the momentum.
   */
  setWeights(fullWeight: ArrayLike<number>): void {
    const d = this.embeddingSize;
    assertArg(fullWeight.length === this.numClasses * d, 'PartialFC.setWeights', 'fullWeight', `length ${fullWeight.length}`, `length numClasses·embeddingSize = ${this.numClasses * d}`);
    const zero = new Float64Array(d);
    for (let r = 0; r < this.numLocal; r++) {
      this.bank.writeWeight(r, fullWeight, (this.classStart + r) * d);
      this.bank.writeMomentum(r, zero);
    }
  }

  /** This rank's shard weights [numLocal, D] as float64 (a copy). */
  getWeights(): Float64Array {
    const d = this.embeddingSize;
    const out = new Float64Array(this.numLocal * d);
    for (let r = 0; r < this.numLocal; r++) this.bank.readWeight(r, out, r * d);
    return out;
  }

  /** This rank's shard momentum [numLocal, D] as float64 (a copy). */
  getMomentum(): Float64Array {
    const d = this.embeddingSize;
    const out = new Float64Array(this.numLocal * d);
    for (let r = 0; r < this.numLocal; r++) this.bank.readMomentum(r, out, r * d);
    return out;
  }

  /**
   * Saves the bank (weights, momentum, step, sampling state) of every rank into `dir` (collective). A bank saved
   * with W ranks loads with any W'. See {@link saveBank}.
   */
  save(dir: string): Promise<void> {
    return saveBank(this, dir);
  }

  /**
   * Loads a bank saved by {@link PartialFC.save} with any world size (`E_CHECKPOINT` on a shape mismatch). The
   * accumulated gradient is not part of a checkpoint (save at update boundaries); loading drops it.
   */
  async load(dir: string): Promise<BankManifest> {
    const manifest = await loadBank(this, dir);
    this.clearAccumulated();
    return manifest;
  }

  /** Number of this rank's rows holding an accumulated gradient (the union of the rows sampled since the last update). */
  get accumulatedRows(): number {
    return this.accumulated.size;
  }

  /**
   * The accumulated gradient of this rank's shard, float64 [numLocal, D] (zeros for rows never sampled since the
   * last update; a copy).
   */
  getAccumulatedGradient(): Float64Array {
    const d = this.embeddingSize;
    const out = new Float64Array(this.numLocal * d);
    for (const [row, g] of this.accumulated) out.set(g, row * d);
    return out;
  }

  /** Drops the accumulated gradient without applying it. */
  clearAccumulated(): void {
    for (const g of this.accumulated.values()) this.spareRows.push(g);
    this.accumulated.clear();
  }

  private accumulateRow(row: number, src: Float64Array, off: number): void {
    const d = this.embeddingSize;
    let g = this.accumulated.get(row);
    if (!g) {
      g = this.spareRows.pop() ?? new Float64Array(d);
      g.set(src.subarray(off, off + d));
      this.accumulated.set(row, g);
      return;
    }
    for (let j = 0; j < d; j++) g[j] = g[j]! + src[off + j]!;
  }

  /**
   * Applies the gradient accumulated by `forwardBackward(…, { accumulate: true })` with one PyTorch SGD step
   * (`g = Σ grads + wd·w; buf = μ·buf + g; w -= lr·buf`) and clears it; `stepCount` increases by one. `sparse`: only
   * rows with an accumulated gradient (the union of the sampled sets) move; `dense`: every row of the shard moves
   * (zero gradient for the others, as the reference V2's full-matrix optimizer). Local (no collective).
   * @param lr learning rate, finite and >= 0
   * @param options.update bank update semantics for this step (default: the constructor's `update`)
   */
  applyUpdate(lr: number, options: { update?: 'sparse' | 'dense' } = {}): void {
    assertArg(Number.isFinite(lr) && lr >= 0, 'PartialFC.applyUpdate', 'lr', lr, 'a finite number >= 0');
    const update = options.update ?? this.update;
    assertArg(update === 'sparse' || update === 'dense', 'PartialFC.applyUpdate', 'update', update, "'sparse' or 'dense'");
    const sgd: SgdOptions = { lr, momentum: this.momentum, weightDecay: this.weightDecay };
    if (update === 'dense') {
      for (let r = 0; r < this.numLocal; r++) this.bank.sgdRow(r, this.accumulated.get(r) ?? null, 0, sgd);
    } else {
      for (const [row, g] of this.accumulated) this.bank.sgdRow(row, g, 0, sgd);
    }
    this.clearAccumulated();
    this.stepCount++;
  }

  /** Exchanges batch sizes and the first bad label / non-finite value of every rank; throws the same error on all. */
  private async validate(embeddings: ArrayLike<number>, labels: ArrayLike<number>): Promise<number> {
    const d = this.embeddingSize;
    const B = labels.length;
    const C = this.numClasses;
    let badLabel = -1;
    let badValue = 0;
    for (let i = 0; i < B; i++) {
      const l = labels[i]!;
      if (!Number.isInteger(l) || l < 0 || l >= C) {
        badLabel = i;
        badValue = l;
        break;
      }
    }
    let nonFinite = -1;
    let nonFiniteValue = 0;
    if (embeddings.length === B * d) {
      for (let i = 0; i < embeddings.length; i++) {
        if (!Number.isFinite(embeddings[i]!)) {
          nonFinite = i;
          nonFiniteValue = embeddings[i]!;
          break;
        }
      }
    }
    const mine = Float64Array.of(B, embeddings.length, badLabel, badValue, nonFinite, nonFiniteValue);
    const all = await this.comm.allGather(mine);
    const W = this.comm.worldSize;
    const who = (r: number) => (W > 1 ? `rank ${r}: ` : '');
    const B0 = all[0]!;
    for (let r = 0; r < W; r++) {
      const Br = all[r * HEADER]!;
      if (Br < 1 || Br !== B0 || (this.batchSize !== null && Br !== this.batchSize)) {
        const expected = this.batchSize ?? B0;
        throw new PfcError(
          'E_BATCH_SIZE',
          `PartialFC.forwardBackward: ${who(r)}batch size ${Br} differs from ${this.batchSize !== null ? 'the first step' : 'rank 0'} (${expected}); every rank and step must use the same batch size (drop_last)`,
          { details: { rank: r, batchSize: Br, expected } },
        );
      }
    }
    for (let r = 0; r < W; r++) {
      const len = all[r * HEADER + 1]!;
      if (len !== B0 * d) {
        throw new PfcError('E_SHAPE', `PartialFC.forwardBackward: ${who(r)}embeddings has ${len} values, expected batch ${B0} × embeddingSize ${d} = ${B0 * d}`, {
          details: { rank: r, length: len, expected: B0 * d },
        });
      }
    }
    for (let r = 0; r < W; r++) {
      const i = all[r * HEADER + 2]!;
      if (i >= 0) {
        const v = all[r * HEADER + 3]!;
        throw new PfcError('E_LABEL_RANGE', `PartialFC.forwardBackward: ${who(r)}labels[${i}] = ${v} is outside [0, ${C}) (numClasses ${C})`, {
          details: { rank: r, index: i, label: v, numClasses: C },
        });
      }
    }
    for (let r = 0; r < W; r++) {
      const i = all[r * HEADER + 4]!;
      if (i >= 0) {
        const v = all[r * HEADER + 5]!;
        const row = Math.floor(i / d);
        throw new PfcError('E_NON_FINITE', `PartialFC.forwardBackward: ${who(r)}embeddings[${row}, ${i % d}] = ${v} is not finite`, {
          details: { rank: r, row, column: i % d, value: v },
        });
      }
    }
    this.batchSize = B;
    return B;
  }

  /**
   * One Partial FC step on this rank (collective: every rank calls it with its own batch).
   * Gathers labels and embeddings from all ranks, samples this shard's centers, computes
   * `s·margin(clamp(normalize(E)·normalize(W_I)ᵀ))`, the distributed softmax cross-entropy, the gradient for this rank's
   * embeddings and for the sampled centers, and applies SGD to the bank when `lr` is given.
   * @param embeddings this rank's raw (un-normalised) embeddings [B, D], float32 or float64
   * @param labels this rank's global class ids [B], integers in [0, numClasses)
   */
  async forwardBackward(embeddings: ArrayLike<number>, labels: ArrayLike<number>, options: StepOptions = {}): Promise<StepResult> {
    const d = this.embeddingSize;
    const comm = this.comm;
    const W = comm.worldSize;
    const f64 = this.dtype === 'float64';
    const F = f64 ? Float64Array : Float32Array;
    if (options.lr !== undefined) assertArg(Number.isFinite(options.lr) && options.lr >= 0, 'PartialFC.forwardBackward', 'lr', options.lr, 'a finite number >= 0');
    const update = options.update ?? this.update;
    assertArg(update === 'sparse' || update === 'dense', 'PartialFC.forwardBackward', 'update', update, "'sparse' or 'dense'");
    const B = await this.validate(embeddings, labels);
    const N = B * W;

    const labelsAll = await comm.allGather(Int32Array.from(labels));
    const embAll: FloatArray = await comm.allGather(embeddings instanceof F ? (embeddings as FloatArray) : (F.from(embeddings) as FloatArray));

    // L2-normalised embeddings (eps 1e-12, as torch.nn.functional.normalize)
    const En = new F(N * d);
    const eInv = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      let ss = 0;
      for (let j = 0; j < d; j++) ss += embAll[n * d + j]! ** 2;
      const inv = 1 / Math.max(Math.sqrt(ss), EPS);
      eInv[n] = Math.sqrt(ss) > EPS ? inv : -inv;
      for (let j = 0; j < d; j++) En[n * d + j] = embAll[n * d + j]! * inv;
    }
    const EnT = transpose(En, N, d);

    const local = localizeLabels(labelsAll, this.classStart, this.numLocal);
    let sampled: Sampled;
    if (options.sampleIndex) sampled = forcedCenters(local, options.sampleIndex, this.classStart, this.numLocal);
    else if (this.sampleRate >= 1) sampled = { index: null, labels: local, positivesOnly: false };
    else {
      if (!this.keyScratch || this.keyScratch.length !== this.numLocal) {
        this.keyScratch = new Float64Array(this.numLocal);
        this.selectScratch = new Float64Array(this.numLocal);
      }
      const source = options.keys ? { keys: options.keys } : { rng: this.rng };
      sampled = sampleCenters(local, this.numLocal, this.numSample, source, this.keyScratch, this.selectScratch ?? undefined);
    }
    const index = sampled.index;
    const y = sampled.labels;
    const K = index ? index.length : this.numLocal;
    const rowOf = (k: number) => (index ? index[k]! : k);

    // forward: cosines of the sampled centers, [K, N] (classes on rows: the big operand on the left, no transposes)
    const blockRows = this.blockRows;
    const cacheW = this.cacheSampled ?? K * d <= CACHE_SAMPLED_ELEMENTS;
    const Wn = new F(cacheW ? K * d : Math.min(K, blockRows) * d);
    const wInv = new Float64Array(K);
    const gatherBlock = (k0: number, kb: number, out: FloatArray) => {
      for (let k = 0; k < kb; k++) {
        const off = k * d;
        this.bank.readWeight(rowOf(k0 + k), out, off);
        let ss = 0;
        for (let j = 0; j < d; j++) ss += out[off + j]! ** 2;
        const norm = Math.sqrt(ss);
        const inv = 1 / Math.max(norm, EPS);
        wInv[k0 + k] = norm > EPS ? inv : -inv;
        for (let j = 0; j < d; j++) out[off + j] = out[off + j]! * inv;
      }
    };
    const blockOf = (k0: number, kb: number): FloatArray => (cacheW ? Wn.subarray(k0 * d, (k0 + kb) * d) : Wn.subarray(0, kb * d));
    const cos = new F(K * N);
    for (let k0 = 0; k0 < K; k0 += blockRows) {
      const kb = Math.min(blockRows, K - k0);
      const wb = blockOf(k0, kb);
      gatherBlock(k0, kb, wb);
      cos.set(this.matmul(wb, kb, d, EnT, N), k0 * N);
    }

    const m = this.margin;
    const s = m.s;
    const thr = m.threshold;
    // logits z = s·clamp(cos) (0 for filtered negatives), then the margin on each row's target entry
    const ex = new F(K * N); // z, then exp(z - rowMax), reused by the backward
    for (let i = 0; i < K * N; i++) {
      const c = cos[i]!;
      const t = c > 1 ? 1 : c < -1 ? -1 : c;
      ex[i] = thr > 0 && t > thr ? 0 : s * t;
    }
    for (let n = 0; n < N; n++) {
      const k = y[n]!;
      if (k < 0) continue;
      const c = cos[k * N + n]!;
      ex[k * N + n] = targetLogit(m, c > 1 ? 1 : c < -1 ? -1 : c);
    }
    const marginLogits = options.returnLogits ? F.from(ex) : null;

    // distributed softmax: global row max, then global sum of exps and the target's exp
    const rowMax = new F(N).fill(-Infinity);
    for (let k = 0; k < K; k++) {
      const base = k * N;
      for (let n = 0; n < N; n++) rowMax[n] = Math.max(rowMax[n]!, ex[base + n]!); // Math.max propagates NaN
    }
    await comm.allReduce(rowMax, 'max');
    const sumsD = new Float64Array(2 * N);
    for (let k = 0; k < K; k++) {
      const base = k * N;
      for (let n = 0; n < N; n++) {
        const e = Math.exp(ex[base + n]! - rowMax[n]!);
        ex[base + n] = e;
        sumsD[n] = sumsD[n]! + e;
      }
    }
    for (let n = 0; n < N; n++) if (y[n]! >= 0) sumsD[N + n] = ex[y[n]! * N + n]!;
    const sums = await comm.allReduce(F.from(sumsD) as FloatArray, 'sum');
    let lossSum = 0;
    for (let n = 0; n < N; n++) lossSum -= Math.log(Math.max(sums[N + n]! / sums[n]!, 1e-30));
    const loss = lossSum / N;

    // backward, block by block: d(loss)/d(cos) → gradients of the normalised centers and embeddings
    const dEnT = new Float64Array(d * N); // [d, N]: Wnᵀ·dC keeps the long operand inner (6.5 → 14 GFLOP/s on wasm)
    const invS = new Float64Array(N);
    for (let n = 0; n < N; n++) invS[n] = 1 / sums[n]!;
    const gradWeight = options.returnGradWeight ? new F(K * d) : undefined;
    // with gradients accumulated by earlier calls, this call's joins them and applyUpdate applies the sum
    const pending = options.lr !== undefined && this.accumulated.size > 0;
    const accumulate = pending || (options.lr === undefined && options.accumulate === true);
    const sgd: SgdOptions | null = options.lr !== undefined && !pending ? { lr: options.lr, momentum: this.momentum, weightDecay: this.weightDecay } : null;
    const dW = new Float64Array(Math.min(K, blockRows) * d);
    for (let k0 = 0; k0 < K; k0 += blockRows) {
      const kb = Math.min(blockRows, K - k0);
      const dC = new F(kb * N);
      const invN = 1 / N;
      for (let k = 0; k < kb; k++) {
        const base = (k0 + k) * N;
        const o = k * N;
        for (let n = 0; n < N; n++) {
          const c = cos[base + n]!;
          // clamp: zero gradient outside [-1, 1]; filtered negatives: zero gradient
          if (c > 1 || c < -1 || (thr > 0 && c > thr)) continue;
          dC[o + n] = ex[base + n]! * invS[n]! * invN * s;
        }
      }
      for (let n = 0; n < N; n++) {
        const k = y[n]! - k0;
        if (k < 0 || k >= kb) continue;
        const c = cos[(k0 + k) * N + n]!;
        if (c > 1 || c < -1) continue;
        dC[k * N + n] = (ex[(k0 + k) * N + n]! * invS[n]! - 1) * invN * targetSlope(m, c);
      }
      if (cacheW === false) gatherBlock(k0, kb, Wn.subarray(0, kb * d));
      const wb = blockOf(k0, kb);
      const dWn = this.matmul(dC, kb, N, En, d); // [kb, d]
      const dET = this.matmul(transpose(wb, kb, d), d, kb, dC, N); // [d, N]
      for (let i = 0; i < N * d; i++) dEnT[i] = dEnT[i]! + dET[i]!;
      // through the row normalisation of the centers: (dy - y·(y·dy)) / ‖w‖, or dy/eps below eps
      for (let k = 0; k < kb; k++) {
        const inv = wInv[k0 + k]!;
        const off = k * d;
        let dot = 0;
        if (inv > 0) for (let j = 0; j < d; j++) dot += wb[off + j]! * dWn[off + j]!;
        const a = Math.abs(inv);
        for (let j = 0; j < d; j++) dW[off + j] = (dWn[off + j]! - wb[off + j]! * dot) * a;
      }
      if (gradWeight) gradWeight.set(dW.subarray(0, kb * d), k0 * d);
      if (sgd) for (let k = 0; k < kb; k++) this.bank.sgdRow(rowOf(k0 + k), dW, k * d, sgd);
      else if (accumulate) for (let k = 0; k < kb; k++) this.accumulateRow(rowOf(k0 + k), dW, k * d);
    }
    if (sgd) {
      if (update === 'dense' && index) {
        let next = 0;
        for (let r = 0; r < this.numLocal; r++) {
          if (next < index.length && index[next] === r) next++;
          else this.bank.sgdRow(r, null, 0, sgd);
        }
      }
      this.stepCount++;
    }
    if (pending) this.applyUpdate(options.lr!, { update });

    // each rank receives the sum over ranks of the gradient of its own rows, then back through its normalisation
    const dEnF = await comm.reduceScatter(transpose(F.from(dEnT) as FloatArray, d, N), 'sum', new Array<number>(W).fill(B * d));
    const gradEmbeddings = new F(B * d);
    const r0 = comm.rank * B;
    for (let b = 0; b < B; b++) {
      const inv = eInv[r0 + b]!;
      const off = (r0 + b) * d;
      let dot = 0;
      if (inv > 0) for (let j = 0; j < d; j++) dot += En[off + j]! * dEnF[b * d + j]!;
      const a = Math.abs(inv);
      for (let j = 0; j < d; j++) gradEmbeddings[b * d + j] = (dEnF[b * d + j]! - En[off + j]! * dot) * a;
    }

    const result: StepResult = {
      loss,
      gradEmbeddings,
      sampledIndex: index ?? Int32Array.from({ length: this.numLocal }, (_, i) => i),
      labels: y,
      positivesOnly: sampled.positivesOnly,
    };
    if (gradWeight) result.gradWeight = gradWeight;
    if (marginLogits) {
      result.cosLogits = transpose(cos.map((c) => (c > 1 ? 1 : c < -1 ? -1 : c)), K, N);
      result.marginLogits = transpose(marginLogits, K, N);
    }
    return result;
  }
}
