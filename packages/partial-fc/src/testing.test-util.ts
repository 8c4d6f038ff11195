import { Rng } from '@pfc/core';
import { runLocal } from '@pfc/collective';
import { PartialFC, type PartialFCOptions, type StepOptions, type StepResult } from './partial-fc';

/** A random problem: global embeddings [N, d], labels [N], weight [C, d] (float64). */
export interface Problem {
  C: number;
  d: number;
  N: number;
  emb: Float64Array;
  labels: Int32Array;
  weight: Float64Array;
}

export function makeProblem(C: number, d: number, N: number, seed = 1): Problem {
  const rng = new Rng(seed);
  const weight = rng.fillNormal(new Float64Array(C * d), 0, 0.1);
  const emb = rng.fillNormal(new Float64Array(N * d));
  const labels = Int32Array.from({ length: N }, () => rng.int(C));
  return { C, d, N, emb, labels, weight };
}

export type Opts = Omit<PartialFCOptions, 'comm' | 'numClasses' | 'embeddingSize'>;

/** Runs one step on `W` local ranks; returns every rank's result and the PartialFC objects. */
export async function runStep(p: Problem, W: number, opts: Opts, step: StepOptions = {}): Promise<{ res: StepResult; pfc: PartialFC }[]> {
  const B = p.N / W;
  return runLocal(W, async (comm) => {
    const pfc = new PartialFC({ numClasses: p.C, embeddingSize: p.d, comm, init: 'zeros', ...opts });
    pfc.setWeights(p.weight);
    const r = comm.rank;
    const F = opts.dtype === 'float64' ? Float64Array : Float32Array;
    const res = await pfc.forwardBackward(F.from(p.emb.subarray(r * B * p.d, (r + 1) * B * p.d)), p.labels.subarray(r * B, (r + 1) * B), step);
    return { res, pfc };
  });
}

/** Global [N, d] embedding gradient (rank order) and global [C, d] bank gradient from per-rank results. */
export function assemble(p: Problem, out: { res: StepResult; pfc: PartialFC }[]): { gradE: Float64Array; gradW: Float64Array } {
  const gradE = new Float64Array(p.N * p.d);
  const gradW = new Float64Array(p.C * p.d);
  const B = p.N / out.length;
  out.forEach(({ res, pfc }, r) => {
    gradE.set(res.gradEmbeddings, r * B * p.d);
    res.sampledIndex.forEach((li, k) => {
      for (let j = 0; j < p.d; j++) gradW[(li + pfc.classStart) * p.d + j] = res.gradWeight![k * p.d + j]!;
    });
  });
  return { gradE, gradW };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * Independent dense reference (single process, float64, no sampling): loss and gradients of
 * -mean log softmax(s·margin(clamp(normalize(E)·normalize(W)ᵀ))) with straight-through or exact ArcFace/CosFace.
 */
export function naiveReference(
  p: Problem,
  m: { s: number; m2: number; m3: number; exact?: boolean; threshold?: number },
): { loss: number; gradE: Float64Array; gradW: Float64Array } {
  const { C, d, N } = p;
  const nrm = (x: Float64Array, rows: number) => {
    const out = new Float64Array(x.length);
    const norms = new Float64Array(rows);
    for (let i = 0; i < rows; i++) {
      let ss = 0;
      for (let j = 0; j < d; j++) ss += x[i * d + j]! ** 2;
      norms[i] = Math.sqrt(ss);
      for (let j = 0; j < d; j++) out[i * d + j] = x[i * d + j]! / Math.max(norms[i]!, 1e-12);
    }
    return { out, norms };
  };
  const e = nrm(p.emb, N);
  const w = nrm(p.weight, C);
  const dCos = new Float64Array(N * C);
  let loss = 0;
  const thr = m.threshold ?? 0;
  for (let i = 0; i < N; i++) {
    const z = new Float64Array(C);
    const slope = new Float64Array(C);
    for (let c = 0; c < C; c++) {
      let t = 0;
      for (let j = 0; j < d; j++) t += e.out[i * d + j]! * w.out[c * d + j]!;
      const tc = Math.min(1, Math.max(-1, t));
      if (c === p.labels[i]) {
        if (m.m3 > 0) {
          z[c] = m.s * (tc - m.m3);
          slope[c] = m.s;
        } else {
          const th = Math.acos(tc);
          z[c] = m.s * Math.cos(th + m.m2);
          slope[c] = m.exact ? (m.s * Math.sin(th + m.m2)) / Math.sin(th) : m.s;
        }
      } else if (thr > 0 && tc > thr) {
        z[c] = 0;
        slope[c] = 0;
      } else {
        z[c] = m.s * tc;
        slope[c] = m.s;
      }
      if (t > 1 || t < -1) slope[c] = 0;
    }
    const mx = Math.max(...z);
    let sum = 0;
    for (let c = 0; c < C; c++) sum += Math.exp(z[c]! - mx);
    const pt = Math.exp(z[p.labels[i]!]! - mx) / sum;
    loss -= Math.log(Math.max(pt, 1e-30));
    for (let c = 0; c < C; c++) {
      const pr = Math.exp(z[c]! - mx) / sum - (c === p.labels[i] ? 1 : 0);
      dCos[i * C + c] = (pr / N) * slope[c]!;
    }
  }
  const back = (y: Float64Array, norms: Float64Array, dy: Float64Array, rows: number) => {
    const dx = new Float64Array(rows * d);
    for (let i = 0; i < rows; i++) {
      const n = norms[i]!;
      let dot = 0;
      for (let j = 0; j < d; j++) dot += y[i * d + j]! * dy[i * d + j]!;
      for (let j = 0; j < d; j++) dx[i * d + j] = n > 1e-12 ? (dy[i * d + j]! - y[i * d + j]! * dot) / n : dy[i * d + j]! / 1e-12;
    }
    return dx;
  };
  const dEn = new Float64Array(N * d);
  const dWn = new Float64Array(C * d);
  for (let i = 0; i < N; i++)
    for (let c = 0; c < C; c++) {
      const g = dCos[i * C + c]!;
      if (g === 0) continue;
      for (let j = 0; j < d; j++) {
        dEn[i * d + j] = dEn[i * d + j]! + g * w.out[c * d + j]!;
        dWn[c * d + j] = dWn[c * d + j]! + g * e.out[i * d + j]!;
      }
    }
  return { loss: loss / N, gradE: back(e.out, e.norms, dEn, N), gradW: back(w.out, w.norms, dWn, C) };
}
