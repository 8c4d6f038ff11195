import { PfcError } from '@pfc/core';

/** Margin-softmax settings, as the reference's `CombinedMarginLoss(s, m1, m2, m3, interclass_filtering_threshold)`. */
export interface MarginOptions {
  /** Logit scale (64 in every reference config). */
  s: number;
  /** Must be 1 (the reference never uses m1 as a multiplier). */
  m1: number;
  /** ArcFace additive angular margin (used when m1 = 1 and m3 = 0). */
  m2: number;
  /** CosFace additive cosine margin (used when m3 > 0; m2 is then ignored, as the reference). */
  m3: number;
  /** Negative cosines above this are set to 0 with zero gradient (0 = off; the reference configs use 0 or 0.4). */
  interclassFilteringThreshold?: number;
  /**
   * ArcFace backward: `'straight-through'` (default, the reference: the target's gradient is `s`, as if no margin)
   * or `'exact'` (the derivative of `s·cos(acos(t) + m2)`, i.e. `s·sin(θ+m2)/sin θ`).
   */
  gradient?: 'straight-through' | 'exact';
}

/** A validated margin with the branch resolved. */
export interface ResolvedMargin {
  kind: 'arcface' | 'cosface';
  s: number;
  m2: number;
  m3: number;
  threshold: number;
  exact: boolean;
}

/** The reference ArcFace (1, 0.5, 0) with s = 64. */
export const ARCFACE: MarginOptions = { s: 64, m1: 1, m2: 0.5, m3: 0 };
/** The reference CosFace (1, 0, 0.4) with s = 64. */
export const COSFACE: MarginOptions = { s: 64, m1: 1, m2: 0, m3: 0.4 };

/**
 * Validates margin settings and picks the branch as the reference: `m1 == 1 && m3 == 0` → ArcFace,
 * `m3 > 0` → CosFace, anything else → `E_MARGIN`. Also rejects non-finite values, `s <= 0` and a threshold outside [0, 1].
 */
export function resolveMargin(m: MarginOptions): ResolvedMargin {
  const bad = (msg: string, details: Record<string, unknown>) => new PfcError('E_MARGIN', `margin: ${msg}`, { details });
  if (m === null || typeof m !== 'object') throw bad(`expected an object { s, m1, m2, m3 }, got ${String(m)}`, {});
  for (const k of ['s', 'm1', 'm2', 'm3'] as const) {
    if (typeof m[k] !== 'number' || !Number.isFinite(m[k])) throw bad(`'${k}' must be a finite number, got ${String(m[k])}`, { [k]: m[k] });
  }
  if (m.s <= 0) throw bad(`'s' must be > 0, got ${m.s}`, { s: m.s });
  const threshold = m.interclassFilteringThreshold ?? 0;
  if (!Number.isFinite(threshold) || threshold < 0 || threshold > 1) {
    throw bad(`'interclassFilteringThreshold' must be in [0, 1] (0 = off), got ${threshold}`, { threshold });
  }
  const gradient = m.gradient ?? 'straight-through';
  if (gradient !== 'straight-through' && gradient !== 'exact') {
    throw bad(`'gradient' must be 'straight-through' or 'exact', got ${JSON.stringify(gradient)}`, { gradient });
  }
  if (m.m1 === 1 && m.m3 === 0) {
    return { kind: 'arcface', s: m.s, m2: m.m2, m3: 0, threshold, exact: gradient === 'exact' };
  }
  if (m.m3 > 0) return { kind: 'cosface', s: m.s, m2: 0, m3: m.m3, threshold, exact: gradient === 'exact' };
  throw bad(
    `(m1, m2, m3) = (${m.m1}, ${m.m2}, ${m.m3}) is neither ArcFace (m1 = 1, m3 = 0) nor CosFace (m3 > 0); the reference supports no other combination`,
    { m1: m.m1, m2: m.m2, m3: m.m3 },
  );
}

/** Scaled target logit for the clamped target cosine `t`. */
export function targetLogit(m: ResolvedMargin, t: number): number {
  return m.kind === 'arcface' ? m.s * Math.cos(Math.acos(t) + m.m2) : m.s * (t - m.m3);
}

/**
 * d(target logit)/dt. Straight-through (the reference) and CosFace: `s`. Exact ArcFace: `s·sin(θ+m2)/sin θ`,
 * θ = acos t; at |t| = 1 (sin θ = 0) the derivative is unbounded and sin θ is floored at 1e-12.
 */
export function targetSlope(m: ResolvedMargin, t: number): number {
  if (m.kind !== 'arcface' || !m.exact) return m.s;
  const theta = Math.acos(t);
  return (m.s * Math.sin(theta + m.m2)) / Math.max(Math.sin(theta), 1e-12);
}
