import { PfcError, assertArg } from '@pfc/core';

/** Serialisable optimizer state: one Float32Array per parameter and slot, plus the step count. */
export interface OptimizerState {
  kind: 'sgd' | 'adamw';
  step: number;
  /** slot name (`momentum_buffer`, `exp_avg`, `exp_avg_sq`) → one array per parameter (null before the first step). */
  slots: Record<string, (Float32Array | null)[]>;
}

/** An optimizer over host parameters: `params[i]` is updated in place from `grads[i]` (same length). */
export interface HostOptimizer {
  readonly kind: 'sgd' | 'adamw';
  step(params: readonly Float32Array[], grads: readonly Float32Array[], lr: number): void;
  getState(): OptimizerState;
  setState(state: OptimizerState): void;
}

function checkShapes(fn: string, params: readonly Float32Array[], grads: readonly Float32Array[], n: number): void {
  if (params.length !== grads.length || (n >= 0 && params.length !== n)) {
    throw new PfcError('E_ARGUMENT', `${fn}: ${params.length} parameters, ${grads.length} gradients${n >= 0 ? `, ${n} expected` : ''}`);
  }
  for (let i = 0; i < params.length; i++) {
    if (params[i]!.length !== grads[i]!.length) {
      throw new PfcError('E_ARGUMENT', `${fn}: parameter ${i} has ${params[i]!.length} elements but its gradient has ${grads[i]!.length}`);
    }
  }
}

/**
 * `torch.optim.SGD(lr, momentum, weight_decay)` with dampening 0 and no Nesterov: d = g + wd·w; buf = d at the
 * first step, else buf = momentum·buf + d; w ← w − lr·buf. Weight decay applies to every parameter, as in the reference.
 */
export class Sgd implements HostOptimizer {
  readonly kind = 'sgd' as const;
  private bufs: (Float32Array | null)[] = [];
  private steps = 0;

  constructor(
    readonly momentum = 0.9,
    readonly weightDecay = 5e-4,
  ) {
    assertArg(momentum >= 0 && momentum < 1, 'Sgd', 'momentum', momentum, 'in [0, 1)');
    assertArg(weightDecay >= 0, 'Sgd', 'weightDecay', weightDecay, 'non-negative');
  }

  step(params: readonly Float32Array[], grads: readonly Float32Array[], lr: number): void {
    checkShapes('Sgd.step', params, grads, this.steps === 0 && this.bufs.length === 0 ? -1 : this.bufs.length);
    if (this.bufs.length === 0) this.bufs = params.map(() => null);
    const m = this.momentum;
    const wd = this.weightDecay;
    for (let i = 0; i < params.length; i++) {
      const w = params[i]!;
      const g = grads[i]!;
      let buf = this.bufs[i]!;
      if (m === 0) {
        for (let j = 0; j < w.length; j++) w[j] = w[j]! - lr * (g[j]! + wd * w[j]!);
        continue;
      }
      if (buf === null) {
        buf = new Float32Array(w.length);
        for (let j = 0; j < w.length; j++) buf[j] = g[j]! + wd * w[j]!;
        this.bufs[i] = buf;
      } else {
        for (let j = 0; j < w.length; j++) buf[j] = m * buf[j]! + (g[j]! + wd * w[j]!);
      }
      for (let j = 0; j < w.length; j++) w[j] = w[j]! - lr * buf[j]!;
    }
    this.steps += 1;
  }

  getState(): OptimizerState {
    return { kind: 'sgd', step: this.steps, slots: { momentum_buffer: this.bufs.map((b) => (b ? b.slice() : null)) } };
  }

  setState(state: OptimizerState): void {
    if (state.kind !== 'sgd' || !state.slots.momentum_buffer) {
      throw new PfcError('E_CHECKPOINT', `Sgd.setState: expected an sgd state with slot momentum_buffer, got kind '${state.kind}'`);
    }
    this.steps = state.step;
    this.bufs = state.slots.momentum_buffer.map((b) => (b ? b.slice() : null));
  }
}

/**
 * `torch.optim.AdamW(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay)`: decoupled decay w ← w − lr·wd·w, then the
 * bias-corrected Adam update.
 */
export class AdamW implements HostOptimizer {
  readonly kind = 'adamw' as const;
  private m: (Float32Array | null)[] = [];
  private v: (Float32Array | null)[] = [];
  private steps = 0;

  constructor(
    readonly weightDecay = 0.01,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly eps = 1e-8,
  ) {}

  step(params: readonly Float32Array[], grads: readonly Float32Array[], lr: number): void {
    checkShapes('AdamW.step', params, grads, this.m.length === 0 ? -1 : this.m.length);
    if (this.m.length === 0) {
      this.m = params.map((p) => new Float32Array(p.length));
      this.v = params.map((p) => new Float32Array(p.length));
    }
    this.steps += 1;
    const bc1 = 1 - Math.pow(this.beta1, this.steps);
    const bc2 = 1 - Math.pow(this.beta2, this.steps);
    for (let i = 0; i < params.length; i++) {
      const w = params[i]!;
      const g = grads[i]!;
      const m = this.m[i]!;
      const v = this.v[i]!;
      for (let j = 0; j < w.length; j++) {
        const gj = g[j]!;
        w[j] = w[j]! * (1 - lr * this.weightDecay);
        m[j] = this.beta1 * m[j]! + (1 - this.beta1) * gj;
        v[j] = this.beta2 * v[j]! + (1 - this.beta2) * gj * gj;
        w[j] = w[j]! - (lr * (m[j]! / bc1)) / (Math.sqrt(v[j]! / bc2) + this.eps);
      }
    }
  }

  getState(): OptimizerState {
    return { kind: 'adamw', step: this.steps, slots: { exp_avg: this.m.map((b) => b!.slice()), exp_avg_sq: this.v.map((b) => b!.slice()) } };
  }

  setState(state: OptimizerState): void {
    if (state.kind !== 'adamw' || !state.slots.exp_avg || !state.slots.exp_avg_sq) {
      throw new PfcError('E_CHECKPOINT', `AdamW.setState: expected an adamw state with slots exp_avg and exp_avg_sq, got kind '${state.kind}'`);
    }
    this.steps = state.step;
    this.m = state.slots.exp_avg.map((b) => (b ? b.slice() : null));
    this.v = state.slots.exp_avg_sq.map((b) => (b ? b.slice() : null));
  }
}

/**
 * `torch.nn.utils.clip_grad_norm_(params, maxNorm)` with the L2 norm: total = ‖concat(grads)‖₂; every gradient is
 * scaled in place by min(1, maxNorm / (total + 1e-6)).
 * @returns the total norm before clipping (non-finite when a gradient is)
 */
export function clipGradNorm(grads: readonly Float32Array[], maxNorm: number): number {
  assertArg(maxNorm > 0, 'clipGradNorm', 'maxNorm', maxNorm, 'positive');
  let sq = 0;
  for (const g of grads) for (let j = 0; j < g.length; j++) sq += g[j]! * g[j]!;
  const total = Math.sqrt(sq);
  const coef = maxNorm / (total + 1e-6);
  if (coef < 1) for (const g of grads) for (let j = 0; j < g.length; j++) g[j] = g[j]! * coef;
  return total;
}
