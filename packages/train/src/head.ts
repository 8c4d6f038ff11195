import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { PfcError, Rng, assertArg, type RngState } from '@pfc/core';
import type { Communicator } from '@pfc/collective';
import { readSafetensors, writeSafetensors, type NamedTensor } from './safetensors';

/**
 * What the trainer needs from the classifier head of one rank: the Partial FC layer holds this rank's shard of the
 * class centers and its own optimizer state.
 */
export interface TrainHead {
  /**
   * Loss over the global batch and this rank's embedding gradient.
   * @param embeddings float32 [B, d] row-major, this rank's raw (un-normalised) embeddings
   * @param labels int32 [B] global class ids
   * @param stepLr when not null, the gradients accumulated so far (this call's included) are applied with this
   *   learning rate (SGD with the run's momentum and weight decay) and cleared: the optimizer step of an
   *   accumulation boundary. Null accumulates only (`gradient_acc` > 1).
   * @returns `loss` (identical on every rank) and `gradEmbeddings` float32 [B, d] = d loss / d embeddings
   *   (the true derivative; the reference's `.grad` is world size times this)
   */
  forwardBackward(embeddings: Float32Array, labels: Int32Array, stepLr: number | null): Promise<{ loss: number; gradEmbeddings: Float32Array }>;
  /** Writes this rank's shard into `dir` (every rank calls it with the same `dir`). */
  save(dir: string): Promise<void>;
  /** Loads this rank's shard from a directory written by `save` with any world size (re-sharding by class range). */
  load(dir: string): Promise<void>;
}

/** Options of {@link BuiltinPartialFC}. */
export interface BuiltinPartialFCOptions {
  numClasses: number;
  embeddingSize: number;
  sampleRate: number;
  /** (m1, m2, m3); m1 must be 1. ArcFace when m3 = 0 (straight-through gradient, as the reference), else CosFace. */
  margin: readonly [number, number, number];
  /** Scale s (64). */
  scale?: number;
  interclassFilteringThreshold?: number;
  momentum: number;
  weightDecay: number;
  seed: number;
}

/** Shard of rank r: numLocal = floor(C/W) + (r < C mod W), classStart = floor(C/W)·r + min(r, C mod W). */
export function shardRange(numClasses: number, worldSize: number, rank: number): { classStart: number; numLocal: number } {
  const base = Math.floor(numClasses / worldSize);
  const rem = numClasses % worldSize;
  return { classStart: base * rank + Math.min(rank, rem), numLocal: base + (rank < rem ? 1 : 0) };
}

/**
 * A compact host-memory Partial FC (the "memory bank" semantics: only sampled rows and their momentum change),
 * used by the trainer's own tests and as a fallback head; `@pfc/partial-fc` is the full implementation.
 * Class centers start as N(0, 0.01) drawn per class, so the initial bank does not depend on the world size.
 */
export class BuiltinPartialFC implements TrainHead {
  readonly classStart: number;
  readonly numLocal: number;
  readonly numSample: number;
  private readonly d: number;
  private weight: Float32Array;
  private momentumBuf: Float32Array;
  private readonly grads = new Map<number, Float32Array>();
  private rng: Rng;
  private readonly s: number;

  constructor(
    private readonly comm: Communicator,
    private readonly opts: BuiltinPartialFCOptions,
  ) {
    assertArg(opts.margin[0] === 1, 'BuiltinPartialFC', 'margin[0]', opts.margin[0], '1 (the reference rejects m1 != 1)');
    assertArg(opts.sampleRate >= 0 && opts.sampleRate <= 1, 'BuiltinPartialFC', 'sampleRate', opts.sampleRate, 'in [0, 1]');
    const { classStart, numLocal } = shardRange(opts.numClasses, comm.worldSize, comm.rank);
    this.classStart = classStart;
    this.numLocal = numLocal;
    this.numSample = Math.floor(opts.sampleRate * numLocal);
    this.d = opts.embeddingSize;
    this.s = opts.scale ?? 64;
    this.weight = new Float32Array(numLocal * this.d);
    this.momentumBuf = new Float32Array(numLocal * this.d);
    const init = new Rng(opts.seed).fork('class-centers');
    const row = new Float32Array(this.d);
    for (let c = 0; c < numLocal; c++) {
      init.fork(classStart + c).fillNormal(row, 0, 0.01);
      this.weight.set(row, c * this.d);
    }
    this.rng = new Rng(opts.seed).fork(`sampling-${comm.rank}`);
  }

  /** The sampling generator's state (saved in checkpoints). */
  getRngState(): RngState {
    return this.rng.getState();
  }

  setRngState(s: RngState): void {
    this.rng.setState(s);
  }

  private sample(local: Int32Array): Int32Array {
    if (this.opts.sampleRate >= 1 || this.numSample >= this.numLocal) return Int32Array.from({ length: this.numLocal }, (_, i) => i);
    const keys = new Float64Array(this.numLocal);
    for (let i = 0; i < this.numLocal; i++) keys[i] = this.rng.uniform();
    for (const l of local) if (l >= 0) keys[l] = 2;
    const order = Int32Array.from({ length: this.numLocal }, (_, i) => i).sort((a, b) => keys[b]! - keys[a]! || a - b);
    return order.subarray(0, this.numSample).slice().sort();
  }

  async forwardBackward(embeddings: Float32Array, labels: Int32Array, stepLr: number | null = null): Promise<{ loss: number; gradEmbeddings: Float32Array }> {
    const d = this.d;
    const B = labels.length;
    if (embeddings.length !== B * d) throw new PfcError('E_SHAPE', `BuiltinPartialFC: embeddings has ${embeddings.length} values, expected ${B}·${d}`);
    const allEmb = await this.comm.allGather(embeddings);
    const allLab = await this.comm.allGather(labels);
    const N = allLab.length;
    for (let i = 0; i < N; i++) {
      const l = allLab[i]!;
      if (!(l >= 0 && l < this.opts.numClasses)) throw new PfcError('E_LABEL_RANGE', `BuiltinPartialFC: label ${l} at global row ${i} is outside [0, ${this.opts.numClasses})`);
    }
    const local = new Int32Array(N);
    for (let i = 0; i < N; i++) {
      const l = allLab[i]! - this.classStart;
      local[i] = l >= 0 && l < this.numLocal ? l : -1;
    }
    const idx = this.sample(local);
    const K = idx.length;
    const pos = new Int32Array(this.numLocal).fill(-1);
    idx.forEach((c, k) => (pos[c] = k));
    const target = Int32Array.from(local, (l) => (l >= 0 ? pos[l]! : -1));
    // Normalised embeddings and sampled centers.
    const xn = new Float32Array(N * d);
    const xnorm = new Float64Array(N);
    for (let i = 0; i < N; i++) {
      let q = 0;
      for (let j = 0; j < d; j++) q += allEmb[i * d + j]! ** 2;
      const n = Math.max(Math.sqrt(q), 1e-12);
      xnorm[i] = n;
      for (let j = 0; j < d; j++) xn[i * d + j] = allEmb[i * d + j]! / n;
    }
    const wn = new Float32Array(K * d);
    const wnorm = new Float64Array(K);
    for (let k = 0; k < K; k++) {
      const r = idx[k]! * d;
      let q = 0;
      for (let j = 0; j < d; j++) q += this.weight[r + j]! ** 2;
      const n = Math.max(Math.sqrt(q), 1e-12);
      wnorm[k] = n;
      for (let j = 0; j < d; j++) wn[k * d + j] = this.weight[r + j]! / n;
    }
    const [, m2, m3] = this.opts.margin;
    const tau = this.opts.interclassFilteringThreshold ?? 0;
    const z = new Float64Array(N * K);
    const gate = new Uint8Array(N * K); // 1 where the logit carries a gradient
    for (let i = 0; i < N; i++) {
      for (let k = 0; k < K; k++) {
        let c = 0;
        for (let j = 0; j < d; j++) c += xn[i * d + j]! * wn[k * d + j]!;
        const inside = c >= -1 && c <= 1;
        c = Math.min(1, Math.max(-1, c));
        let g = inside ? 1 : 0;
        if (k === target[i]) c = m3 > 0 ? c - m3 : Math.cos(Math.acos(c) + m2);
        else if (tau > 0 && c > tau) {
          c = 0;
          g = 0;
        }
        z[i * K + k] = this.s * c;
        gate[i * K + k] = g;
      }
    }
    const rowMax = new Float32Array(N).fill(-Infinity);
    for (let i = 0; i < N; i++) for (let k = 0; k < K; k++) rowMax[i] = Math.max(rowMax[i]!, z[i * K + k]!);
    await this.comm.allReduce(rowMax, 'max');
    const rowSum = new Float32Array(N);
    for (let i = 0; i < N; i++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const e = Math.exp(z[i * K + k]! - rowMax[i]!);
        z[i * K + k] = e;
        s += e;
      }
      rowSum[i] = s;
    }
    await this.comm.allReduce(rowSum, 'sum');
    const pt = new Float32Array(N);
    for (let i = 0; i < N; i++) {
      for (let k = 0; k < K; k++) z[i * K + k] = z[i * K + k]! / rowSum[i]!;
      if (target[i]! >= 0) pt[i] = z[i * K + target[i]!]!;
    }
    await this.comm.allReduce(pt, 'sum');
    let loss = 0;
    for (let i = 0; i < N; i++) loss -= Math.log(Math.max(pt[i]!, 1e-30));
    loss /= N;
    // d loss / d cos = s·(p − onehot)/N (straight-through through the ArcFace margin, identity through CosFace).
    const gx = new Float32Array(N * d);
    for (let k = 0; k < K; k++) {
      const gw = new Float64Array(d);
      for (let i = 0; i < N; i++) {
        const g0 = gate[i * K + k]! ? (this.s * (z[i * K + k]! - (k === target[i] ? 1 : 0))) / N : 0;
        if (g0 === 0) continue;
        for (let j = 0; j < d; j++) {
          gx[i * d + j] = gx[i * d + j]! + g0 * wn[k * d + j]!;
          gw[j] = gw[j]! + g0 * xn[i * d + j]!;
        }
      }
      // Through w/‖w‖: (g − ŵ(ŵ·g))/‖w‖.
      let dot = 0;
      for (let j = 0; j < d; j++) dot += gw[j]! * wn[k * d + j]!;
      const row = idx[k]!;
      let acc = this.grads.get(row);
      if (!acc) this.grads.set(row, (acc = new Float32Array(d)));
      for (let j = 0; j < d; j++) acc[j] = acc[j]! + (gw[j]! - wn[k * d + j]! * dot) / wnorm[k]!;
    }
    for (let i = 0; i < N; i++) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += gx[i * d + j]! * xn[i * d + j]!;
      for (let j = 0; j < d; j++) gx[i * d + j] = (gx[i * d + j]! - xn[i * d + j]! * dot) / xnorm[i]!;
    }
    const counts = Array.from({ length: this.comm.worldSize }, () => B * d);
    const gradEmbeddings = await this.comm.reduceScatter(gx, 'sum', counts);
    if (stepLr !== null) this.step(stepLr);
    return { loss, gradEmbeddings };
  }

  /** Applies the accumulated gradients of the sampled rows (sparse SGD) and clears them. */
  step(lr: number): void {
    const { momentum: m, weightDecay: wd } = this.opts;
    const d = this.d;
    for (const [row, g] of this.grads) {
      const o = row * d;
      for (let j = 0; j < d; j++) {
        const dj = g[j]! + wd * this.weight[o + j]!;
        const b = m * this.momentumBuf[o + j]! + dj;
        this.momentumBuf[o + j] = b;
        this.weight[o + j] = this.weight[o + j]! - lr * b;
      }
    }
    this.grads.clear();
  }

  /** Drops accumulated gradients. */
  zeroGrad(): void {
    this.grads.clear();
  }

  /** Accumulated class-center gradient of this shard, float32 [numLocal, d] (zeros for rows not sampled). */
  accumulatedGradient(): Float32Array {
    const out = new Float32Array(this.numLocal * this.d);
    for (const [row, g] of this.grads) out.set(g, row * this.d);
    return out;
  }

  /** This rank's class centers [numLocal, d] (a view). */
  get weights(): Float32Array {
    return this.weight;
  }

  async save(dir: string): Promise<void> {
    const t = new Map<string, NamedTensor>([
      ['weight', { dtype: 'float32', shape: [this.numLocal, this.d], data: this.weight }],
      ['momentum', { dtype: 'float32', shape: [this.numLocal, this.d], data: this.momentumBuf }],
    ]);
    writeSafetensors(join(dir, `partial_fc.rank${this.comm.rank}.safetensors`), t, {
      class_start: String(this.classStart),
      num_classes: String(this.opts.numClasses),
      world_size: String(this.comm.worldSize),
      rng: JSON.stringify(this.rng.getState()),
    });
  }

  async load(dir: string): Promise<void> {
    const files = existsSync(dir) ? readdirSync(dir).filter((f) => /^partial_fc\.rank\d+\.safetensors$/.test(f)) : [];
    if (files.length === 0) throw new PfcError('E_CHECKPOINT', `BuiltinPartialFC.load: no partial_fc.rank*.safetensors in ${dir}`, { details: { dir } });
    const d = this.d;
    let covered = 0;
    for (const f of files) {
      const { tensors, metadata } = readSafetensors(join(dir, f));
      const start = Number(metadata.class_start);
      if (Number(metadata.num_classes) !== this.opts.numClasses) {
        throw new PfcError('E_CHECKPOINT', `${join(dir, f)}: saved for ${metadata.num_classes} classes, this run has ${this.opts.numClasses}`);
      }
      const w = tensors.get('weight')!.data as Float32Array;
      const mo = tensors.get('momentum')!.data as Float32Array;
      const rows = w.length / d;
      const lo = Math.max(start, this.classStart);
      const hi = Math.min(start + rows, this.classStart + this.numLocal);
      if (hi > lo) {
        this.weight.set(w.subarray((lo - start) * d, (hi - start) * d), (lo - this.classStart) * d);
        this.momentumBuf.set(mo.subarray((lo - start) * d, (hi - start) * d), (lo - this.classStart) * d);
        covered += hi - lo;
      }
      if (Number(metadata.world_size) === this.comm.worldSize && start === this.classStart && metadata.rng) this.rng.setState(JSON.parse(metadata.rng));
    }
    if (covered !== this.numLocal) {
      throw new PfcError('E_CHECKPOINT', `BuiltinPartialFC.load: ${dir} covers ${covered} of this rank's ${this.numLocal} classes [${this.classStart}, ${this.classStart + this.numLocal})`);
    }
    this.grads.clear();
  }
}
