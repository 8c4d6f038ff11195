import * as tf from '@tensorflow/tfjs-core';
import { PfcError, Rng } from '@pfc/core';
import { describeArch, resolveConfig, runArch } from './arch';
import type { ArchSummary, BackboneConfig, ConvSpec, NetworkName, Ops, ParamSpec, ResolvedConfig } from './arch';
import { tfShape, toTfLayout, toTorchLayout } from './layout';

/** BatchNorm epsilon of every reference layer. */
export const BN_EPS = 1e-5;
/** PyTorch's default BatchNorm momentum: running ← (1 − m)·running + m·batch. */
export const BN_MOMENTUM = 0.1;

/** One state-dict tensor in the reference's PyTorch layout (C order). */
export interface StateTensor {
  dtype: 'float32' | 'int64';
  shape: number[];
  data: Float32Array | BigInt64Array;
}

/** A PyTorch-style state dict: names and layouts exactly as the reference's `model.state_dict()`. */
export type StateDict = Map<string, StateTensor>;

/** A trainable tfjs variable and its state-dict name. */
export interface NamedVariable {
  name: string;
  variable: tf.Variable;
}

export interface ApplyOptions {
  /** Batch statistics and running-stat updates (true) or running statistics (false, default). */
  training?: boolean;
}

export interface CreateBackboneOptions {
  /** Seed of the reference initialisation (default 0). */
  seed?: number;
}

let modelCounter = 0;

/**
 * A backbone whose parameters and BatchNorm buffers live in tfjs variables (tfjs layouts, see `layout.ts`), named
 * by the reference's state-dict keys. Input NHWC float32 [N, S, S, 3] in [-1, 1]; output [N, embeddingSize].
 */
export class Backbone {
  readonly config: ResolvedConfig;
  readonly summary: ArchSummary;
  /** Trainable parameters in state-dict order (the frozen `features.weight` and BN buffers excluded). */
  readonly trainableVariables: readonly NamedVariable[];
  private readonly vars = new Map<string, tf.Variable>();
  private readonly specs = new Map<string, ParamSpec>();
  private readonly tracked = new Map<string, bigint>();
  private readonly rng: Rng;
  private uses?: number[];
  private disposed = false;

  constructor(config: ResolvedConfig, options: CreateBackboneOptions = {}) {
    this.config = config;
    this.summary = describeArch(config);
    this.rng = new Rng(options.seed ?? 0);
    const init = this.rng.fork('init');
    const prefix = `pfc_backbone_${++modelCounter}/`;
    const trainable: NamedVariable[] = [];
    for (const p of this.summary.params) {
      this.specs.set(p.name, p);
      if (p.kind === 'bn.num_batches_tracked') {
        this.tracked.set(p.name, 0n);
        continue;
      }
      const data = toTfLayout(p, initialValue(config, p, init));
      const isTrainable = p.kind === 'conv' || p.kind === 'bn.weight' || p.kind === 'bn.bias' || p.kind === 'prelu' || p.kind.startsWith('linear');
      const v = tf.variable(tf.tensor(data, tfShape(p), 'float32'), isTrainable, prefix + p.name);
      this.vars.set(p.name, v);
      if (isTrainable) trainable.push({ name: p.name, variable: v });
    }
    this.trainableVariables = trainable;
  }

  /** Embedding dimension of the output. */
  get embeddingSize(): number {
    return this.summary.embeddingSize;
  }

  /** Expected input shape, NHWC without the batch axis: [S, S, 3]. */
  get inputShape(): [number, number, number] {
    return [this.config.inputSize, this.config.inputSize, 3];
  }

  /**
   * Forward pass. `x`: float32 [N, S, S, 3] (NHWC, RGB in [-1, 1]); returns float32 [N, embeddingSize] raw
   * (not L2-normalised) embeddings. In training mode BatchNorm uses batch statistics (biased variance for the
   * output, unbiased for the running variance, as PyTorch) and updates the running statistics and
   * `num_batches_tracked`; dropout is applied. Call inside `tf.variableGrads`/`tf.grads` to train.
   * Throws `E_SHAPE` for a wrong image size or channel count, or a batch of 1 in training mode.
   */
  apply(x: tf.Tensor, options: ApplyOptions = {}): tf.Tensor2D {
    this.assertAlive();
    const training = options.training ?? false;
    const [S, , C] = this.inputShape;
    if (x.rank !== 4 || x.shape[1] !== S || x.shape[2] !== S || x.shape[3] !== C) {
      throw new PfcError('E_SHAPE', `backbone.apply: input must be NHWC [N, ${S}, ${S}, ${C}] float32, got [${x.shape.join(', ')}]`, {
        details: { actual: x.shape, expected: [-1, S, S, C] },
      });
    }
    if (training && x.shape[0]! < 2) {
      throw new PfcError('E_SHAPE', `backbone.apply: training-mode BatchNorm needs a batch of at least 2 images, got ${x.shape[0]}`, {
        details: { actual: x.shape },
      });
    }
    if (!training) return tf.tidy(() => runArch(this.config, this.inferenceOps(), { t: tf.cast(x, 'float32'), id: 0 }).t as tf.Tensor2D);
    const dropoutSeed = this.rng.int(0x7fffffff);
    return tf.tidy(() => runArch(this.config, this.tfOps(true, dropoutSeed), tf.cast(x, 'float32')) as tf.Tensor2D);
  }

  /** The tfjs variable behind a state-dict entry (trainable or not); throws `E_ARGUMENT` for unknown names. */
  variable(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new PfcError('E_ARGUMENT', `backbone.variable: no float tensor named ${JSON.stringify(name)}`, { details: { name } });
    return v;
  }

  /** Parameter and buffer descriptions in state-dict order (PyTorch shapes). */
  get params(): readonly ParamSpec[] {
    return this.summary.params;
  }

  /** All state (parameters and BN buffers) in the reference's names and PyTorch layouts. */
  getStateDict(): StateDict {
    this.assertAlive();
    const out: StateDict = new Map();
    for (const p of this.summary.params) {
      if (p.kind === 'bn.num_batches_tracked') {
        out.set(p.name, { dtype: 'int64', shape: [], data: BigInt64Array.of(this.tracked.get(p.name)!) });
      } else {
        const data = this.vars.get(p.name)!.dataSync() as Float32Array;
        out.set(p.name, { dtype: 'float32', shape: [...p.shape], data: toTorchLayout(p, data) });
      }
    }
    return out;
  }

  /**
   * Replaces all state from a PyTorch-layout state dict. Every entry must be present with the reference's shape
   * (an element count match is accepted for shapes that differ only by size-1 axes, e.g. ONNX PReLU slopes
   * [C,1,1]); unexpected names are an error unless `strict` is false. Throws `E_WEIGHTS` naming the tensor.
   * `num_batches_tracked` may be absent (PyTorch < 0.4.1 checkpoints); it then keeps its value.
   */
  loadStateDict(state: StateDict, options: { strict?: boolean; source?: string } = {}): void {
    this.assertAlive();
    const strict = options.strict ?? true;
    const src = options.source ? `${options.source}: ` : '';
    const staged: [ParamSpec, Float32Array][] = [];
    for (const p of this.summary.params) {
      const t = state.get(p.name);
      if (!t) {
        if (p.kind === 'bn.num_batches_tracked') continue;
        throw new PfcError('E_WEIGHTS', `${src}missing tensor '${p.name}' (expected shape [${p.shape.join(', ')}])`, { details: { tensor: p.name, expected: p.shape } });
      }
      const n = p.shape.reduce((a, b) => a * b, 1);
      const squeezed = (s: number[]) => s.filter((d) => d !== 1).join(',');
      if (squeezed(t.shape) !== squeezed(p.shape) || t.data.length !== n) {
        throw new PfcError('E_WEIGHTS', `${src}tensor '${p.name}' has shape [${t.shape.join(', ')}], expected [${p.shape.join(', ')}]`, {
          details: { tensor: p.name, actual: t.shape, expected: p.shape },
        });
      }
      if (p.kind === 'bn.num_batches_tracked') {
        const v = t.data[0]!;
        this.tracked.set(p.name, typeof v === 'bigint' ? v : BigInt(Math.round(v)));
        continue;
      }
      const f32 = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as BigInt64Array, (v) => Number(v));
      staged.push([p, f32]);
    }
    if (strict) {
      for (const name of state.keys()) {
        if (!this.specs.has(name)) {
          throw new PfcError('E_WEIGHTS', `${src}unexpected tensor '${name}' for ${describeConfig(this.config)}`, { details: { tensor: name } });
        }
      }
    }
    for (const [p, data] of staged) this.vars.get(p.name)!.assign(tf.tensor(toTfLayout(p, data), tfShape(p), 'float32'));
  }

  /** Frees every variable. The model cannot be used afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }

  private assertAlive(): void {
    if (this.disposed) throw new PfcError('E_DISPOSED', 'backbone: the model has been disposed');
  }

  /**
   * Inference interpreter that frees each activation as soon as its last consumer has run (a tidy around the whole
   * forward would hold every activation until the end: r50 at batch 32 would not fit the wasm heap). Consumer
   * counts come from a dry run of the architecture over value ids, which the real run reproduces in order.
   */
  private inferenceOps(): Ops<{ t: tf.Tensor; id: number }> {
    if (!this.uses) {
      const uses: number[] = [0];
      const use = (...ids: number[]) => {
        for (const i of ids) uses[i]!++;
        uses.push(0);
        return uses.length - 1;
      };
      runArch<number>(this.config, { conv: (x) => use(x), bn: (x) => use(x), prelu: (x) => use(x), add: (a, b) => use(a, b), flatten: (x) => use(x), dropout: (x) => use(x), linear: (x) => use(x) }, 0);
      this.uses = uses;
    }
    const left = this.uses.slice();
    let next = 1;
    const base = this.tfOps(false, 0);
    type V = { t: tf.Tensor; id: number };
    const step = (inputs: V[], f: () => tf.Tensor): V => {
      const t = tf.tidy(f);
      for (const v of inputs) if (--left[v.id]! === 0 && v.id !== 0) v.t.dispose();
      return { t, id: next++ };
    };
    return {
      conv: (x, name, c) => step([x], () => base.conv(x.t, name, c)),
      bn: (x, name, frozen) => step([x], () => base.bn(x.t, name, frozen)),
      prelu: (x, name) => step([x], () => base.prelu(x.t, name)),
      add: (a, b) => step([a, b], () => base.add(a.t, b.t)),
      flatten: (x) => step([x], () => base.flatten(x.t)),
      // A clone, so that freeing the input does not free the output.
      dropout: (x) => step([x], () => tf.clone(x.t)),
      linear: (x, name, out, bias) => step([x], () => base.linear(x.t, name, out, bias)),
    };
  }

  private tfOps(training: boolean, dropoutSeed: number): Ops<tf.Tensor> {
    const v = (name: string) => this.vars.get(name)!;
    return {
      conv: (x, name, c) => convNHWC(x as tf.Tensor4D, v(`${name}.weight`) as tf.Tensor4D, c),
      bn: (x, name) => {
        const gamma = v(`${name}.weight`);
        const beta = v(`${name}.bias`);
        const rm = v(`${name}.running_mean`);
        const rv = v(`${name}.running_var`);
        if (!training) {
          const scale = tf.mul(gamma, tf.rsqrt(tf.add(rv, BN_EPS)));
          return tf.add(tf.mul(x, scale), tf.sub(beta, tf.mul(rm, scale)));
        }
        const { y, mean, variance } = batchNormTrain(x, gamma, beta);
        const n = x.size / x.shape[x.rank - 1]!;
        // Running statistics are buffers, not part of the graph being differentiated.
        tf.tidy(() => {
          rm.assign(tf.add(tf.mul(rm, 1 - BN_MOMENTUM), tf.mul(mean, BN_MOMENTUM)));
          rv.assign(tf.add(tf.mul(rv, 1 - BN_MOMENTUM), tf.mul(variance, (BN_MOMENTUM * n) / Math.max(n - 1, 1))));
        });
        mean.dispose();
        variance.dispose();
        const key = `${name}.num_batches_tracked`;
        this.tracked.set(key, this.tracked.get(key)! + 1n);
        return y;
      },
      prelu: (x, name) => tf.prelu(x, v(`${name}.weight`)),
      add: (a, b) => tf.add(a, b),
      flatten: (x) => tf.reshape(x, [x.shape[0]!, -1]),
      dropout: (x, p) => {
        if (!training || p === 0) return x;
        const keep = tf.cast(tf.greaterEqual(tf.randomUniform(x.shape, 0, 1, 'float32', dropoutSeed), p), 'float32');
        return tf.mul(x, tf.mul(keep, 1 / (1 - p)));
      },
      linear: (x, name, _out, bias) => linearNoTranspose(x as tf.Tensor2D, v(`${name}.weight`) as tf.Tensor2D, bias ? v(`${name}.bias`) : undefined),
    };
  }
}

/** Describes a config in one line for messages (`r50`, `iresnet[1,1,1,1]x[16,32,64,128]`, `mbf`). */
export function describeConfig(cfg: ResolvedConfig): string {
  if (cfg.name === 'mbf') return cfg.scale === 2 && cfg.blocks.join() === '1,4,6,2' ? 'mbf' : `mbf(scale ${cfg.scale}, blocks [${cfg.blocks.join(',')}])`;
  const named = Object.entries({ r18: '2,2,2,2', r34: '3,4,6,3', r50: '3,4,14,3', r100: '3,13,30,3', r200: '6,26,60,6' }).find(([, l]) => l === cfg.layers.join());
  const standard = cfg.widths.join() === '64,128,256,512' && cfg.stemWidth === 64 && cfg.inputSize === 112 && cfg.embeddingSize === 512;
  if (named && standard) return named[0];
  return `iresnet(layers [${cfg.layers.join(',')}], widths [${cfg.widths.join(',')}], stem ${cfg.stemWidth}, input ${cfg.inputSize}, embedding ${cfg.embeddingSize})`;
}

/**
 * Builds a backbone with the reference's initialisation, seeded. `spec`: `r18`, `r34`, `r50`, `r100`, `r200`,
 * `mbf`, `mbf_large`, or a config such as `{ name: 'iresnet', layers: [1,1,1,1], widths: [16,32,64,128],
 * embeddingSize: 128, inputSize: 112 }`.
 */
export function createBackbone(spec: NetworkName | BackboneConfig | string, options: CreateBackboneOptions = {}): Backbone {
  return new Backbone(resolveConfig(spec), options);
}

/**
 * Gradients of `sum(apply(x, training) · dEmb)` with respect to every trainable variable, keyed by state-dict
 * name: the backbone half of back-propagation once Partial FC has produced dLoss/dEmbeddings.
 * `x`: [N, S, S, 3]; `dEmb`: [N, embeddingSize]. Running statistics are updated as in any training step.
 * The caller owns (and disposes) the returned tensors.
 */
export function backwardFromEmbeddings(model: Backbone, x: tf.Tensor, dEmb: tf.Tensor): Map<string, tf.Tensor> {
  if (dEmb.rank !== 2 || dEmb.shape[0] !== x.shape[0] || dEmb.shape[1] !== model.embeddingSize) {
    throw new PfcError('E_SHAPE', `backwardFromEmbeddings: dEmb must be [${x.shape[0]}, ${model.embeddingSize}], got [${dEmb.shape.join(', ')}]`, {
      details: { actual: dEmb.shape, expected: [x.shape[0], model.embeddingSize] },
    });
  }
  const vars = model.trainableVariables;
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(model.apply(x, { training: true }), dEmb)) as tf.Scalar, vars.map((v) => v.variable));
  value.dispose();
  const out = new Map<string, tf.Tensor>();
  for (const v of vars) out.set(v.name, grads[v.variable.name]!);
  return out;
}

function convNHWC(x: tf.Tensor4D, w: tf.Tensor4D, c: ConvSpec): tf.Tensor4D {
  if (c.groups === 1) return tf.conv2d(x, w, c.stride, c.pad, 'NHWC', 1, 'floor');
  const cin = x.shape[3];
  const inG = cin / c.groups;
  const outG = c.out / c.groups;
  const y = tf.depthwiseConv2d(x, w, c.stride, c.pad, 'NHWC', 1, 'floor');
  if (inG === 1) return y;
  // Grouped convolution: a depthwise convolution with multiplier outG, then a sum over each group's inputs.
  const [n, h, wd] = y.shape;
  return tf.reshape(tf.sum(tf.reshape(y, [n, h, wd, c.groups, inG, outG]), 4), [n, h, wd, c.out]);
}

/** y = x·W + b with a backward pass written without matmul transpose flags (slow on wasm). */
function linearNoTranspose(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor): tf.Tensor2D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, wi, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([xi, wi]);
    return {
      value: tf.matMul(xi as tf.Tensor2D, wi as tf.Tensor2D),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D];
        return [tf.matMul(dy as tf.Tensor2D, tf.transpose(ws)), tf.matMul(tf.transpose(xs), dy as tf.Tensor2D)];
      },
    };
  });
  const y = f(x, w) as tf.Tensor2D;
  return b ? tf.add(y, b) : y;
}

/**
 * Mean over every axis but the last (channels): [..., C] → [C]. For NHWC activations, a global average pool over H×W
 * first: tfjs reduces non-innermost axes by transposing the whole tensor, which on the wasm backend costs 10–40× the
 * pooling (8×112×112×64: 49 ms against 1.2 ms).
 */
function channelMean(x: tf.Tensor): tf.Tensor {
  if (x.rank === 4) {
    const [, h, w] = x.shape as [number, number, number, number];
    // two pooling stages (blocks of about √h × √w, then the block means): float32 running sums over ~√(h·w) terms
    // each instead of h·w, which keeps the batch statistics and their gradients near a float64 sum
    const bh = nearDivisor(h);
    const bw = nearDivisor(w);
    return tf.tidy(() => {
      const blocks = bh * bw > 1 ? tf.avgPool(x as tf.Tensor4D, [bh, bw], [bh, bw], 'valid') : (x as tf.Tensor4D);
      return tf.mean(tf.avgPool(blocks, [blocks.shape[1], blocks.shape[2]], 1, 'valid'), [0, 1, 2]);
    });
  }
  return tf.mean(x, Array.from({ length: x.rank - 1 }, (_, i) => i));
}

/** The divisor of `n` nearest to √n (1 for a prime). */
function nearDivisor(n: number): number {
  const r = Math.sqrt(n);
  let best = 1;
  for (let d = 2; d <= n; d++) if (n % d === 0 && Math.abs(d - r) < Math.abs(best - r)) best = d;
  return best;
}

/**
 * Training-mode BatchNorm over all axes but the last, with a closed-form backward pass (tfjs' own BN gradient
 * tiles the statistics to the activation's shape). Returns the output and, kept outside any tidy, the batch mean
 * and biased variance [C] for the running-statistics update; the caller disposes those two.
 */
export function batchNormTrain(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps = BN_EPS): { y: tf.Tensor; mean: tf.Tensor; variance: tf.Tensor } {
  const n = x.size / x.shape[x.rank - 1]!;
  let stats: [tf.Tensor, tf.Tensor] | undefined;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    // The tidy frees the centred and squared activations at once: tensors made inside a custom op's forward
    // would otherwise live until the enclosing gradient computation ends (activation-sized, per BatchNorm).
    const [y, rstd, mean, variance] = tf.tidy(() => {
      const m = channelMean(xi);
      const xc = tf.sub(xi, m);
      const v = channelMean(tf.square(xc));
      const rs = tf.rsqrt(tf.add(v, eps));
      return [tf.add(tf.mul(tf.mul(xc, rs), g), b), rs, m, v];
    });
    stats = [tf.keep(mean!), tf.keep(variance!)];
    // Save the input (alive anyway as the previous op's output) rather than x̂: one activation less per BatchNorm
    // held until the backward pass; x̂ is recomputed there.
    save([xi, mean!, rstd!, g]);
    return {
      value: y!,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [xs, ms, rs, gs] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
          const xh = tf.mul(tf.sub(xs, ms), rs);
          const dbeta = tf.mul(channelMean(dy), n);
          const dgamma = tf.mul(channelMean(tf.mul(dy, xh)), n);
          // dx = γ·rstd/n · (n·dy − Σdy − x̂·Σ(dy·x̂))
          const inner = tf.sub(tf.sub(tf.mul(dy, n), dbeta), tf.mul(xh, dgamma));
          const dx = tf.mul(inner, tf.div(tf.mul(gs, rs), n));
          return [dx, dgamma, dbeta];
        }),
    };
  });
  const y = f(x, gamma, beta);
  const [mean, variance] = stats!;
  return { y, mean, variance };
}

function initialValue(cfg: ResolvedConfig, p: ParamSpec, rng: Rng): Float32Array {
  const n = p.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  switch (p.kind) {
    case 'conv': {
      // iResNet: N(0, 0.1); MobileFaceNet: Kaiming-normal, fan_out = out·k·k, gain √2.
      const std = cfg.name === 'iresnet' ? 0.1 : Math.sqrt(2 / (p.shape[0]! * p.shape[2]! * p.shape[3]!));
      for (let i = 0; i < n; i++) out[i] = rng.normal(0, std);
      return out;
    }
    case 'linear.weight':
    case 'linear.bias': {
      if (cfg.name === 'mbf') {
        if (p.kind === 'linear.weight') {
          const std = Math.sqrt(2 / p.shape[0]!);
          for (let i = 0; i < n; i++) out[i] = rng.normal(0, std);
        }
        return out;
      }
      // PyTorch's default Linear init: U(±1/√fan_in) for weight (Kaiming-uniform, a = √5) and bias.
      const bound = 1 / Math.sqrt(p.linear!.in);
      for (let i = 0; i < n; i++) out[i] = (rng.uniform() * 2 - 1) * bound;
      return out;
    }
    case 'bn.weight':
    case 'bn.frozen_weight':
    case 'bn.running_var':
      return out.fill(1);
    case 'prelu':
      return out.fill(0.25);
    default:
      return out;
  }
}
