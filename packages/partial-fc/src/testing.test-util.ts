import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng, writeNpy } from '@pfc/core';
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
 * -mean log softmax(s·margin(clamp(normalize(E)·normalize(W)ᵀ))) with straight-through or exact ArcFace/CosFace,
 * and the clamped cosines `cos` and margin logits `logits` [N, C] of the forward.
 */
export function naiveReference(
  p: Problem,
  m: { s: number; m2: number; m3: number; exact?: boolean; threshold?: number },
): { loss: number; gradE: Float64Array; gradW: Float64Array; cos: Float64Array; logits: Float64Array } {
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
  const cosOut = new Float64Array(N * C);
  const logitsOut = new Float64Array(N * C);
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
      cosOut[i * C + c] = tc;
      logitsOut[i * C + c] = z[c]!;
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
  return { loss: loss / N, gradE: back(e.out, e.norms, dEn, N), gradW: back(w.out, w.norms, dWn, C), cos: cosOut, logits: logitsOut };
}

/** Shard of rank `r` of `W` over `C` classes, written from peer-semantics.md §1 (not calling sharding.ts). */
export function naiveShard(C: number, W: number, r: number): { classStart: number; numLocal: number } {
  const base = Math.floor(C / W);
  const rest = C % W;
  return { classStart: base * r + Math.min(r, rest), numLocal: base + (r < rest ? 1 : 0) };
}

/**
 * The reference's sampling of one shard (peer-semantics.md §3), written plainly with a full sort: positives' keys
 * forced to 2.0, the `numSample` largest keys kept (lower index first on ties), sorted ascending; the positives alone
 * when there are more of them than `numSample`.
 * @param local localised labels (-1 = other shard)
 * @returns sorted local ids of the sampled centers
 */
export function naiveSample(local: ArrayLike<number>, numLocal: number, numSample: number, keys: ArrayLike<number>): number[] {
  const positives = [...new Set(Array.from(local).filter((l) => l >= 0))].sort((a, b) => a - b);
  if (numSample < positives.length) return positives;
  const k = Array.from(keys);
  for (const p of positives) k[p] = 2.0;
  const order = Array.from({ length: numLocal }, (_, i) => i).sort((a, b) => k[b]! - k[a]! || a - b);
  return order.slice(0, numSample).sort((a, b) => a - b);
}

/** What {@link writeReferenceVectors} generates. */
export interface VectorFixture {
  C: number;
  d: number;
  N: number;
  /** Global labels [N]; default random. */
  labels?: number[];
  s: number;
  m1: number;
  m2: number;
  m3: number;
  sampleRate: number;
  threshold?: number;
  /** One SGD step of the reference (PyTorch SGD, zero momentum buffer before the step), or none. */
  sgd: { lr: number; momentum: number; weight_decay: number } | null;
  /** Which rows the expected SGD step moves: every row (`dense`, the reference V2) or the sampled ones (`sparse`). */
  update: 'dense' | 'sparse';
  worldSizes: number[];
  seed: number;
}

/** Per world size: what the fixture expects (for assertions about the fixture itself). */
export interface FixtureRun {
  loss: number;
  /** Sampled global class ids (rank order, ascending). */
  sampled: number[];
  numLocal: number[];
  numSample: number[];
}

/**
 * Writes a complete vector directory in the layout of peer-semantics.md ("Vector layout"): `input/spec.json` and
 * float32 inputs, and for each dtype and world size `result.json`, `grad_embeddings(_raw).npy`, `grad_weight.npy`,
 * `sampled_index.npy`, `weight_after_sgd.npy` (when `sgd`), and per rank `rand_perm_r{r}.npy` (injected keys, only
 * when sampling), `cos_logits_r{r}.npy`, `margin_logits_r{r}.npy`, `labels_remapped_r{r}.npy`.
 * Expected values come from {@link naiveReference} (float64) on the globally sampled centers, {@link naiveShard},
 * {@link naiveSample} and a plain SGD step: nothing from the code under test. The float32 directories hold the same
 * float64 truth rounded to float32 (the inputs are float32-exact, so both dtypes see the same problem).
 */
export function writeReferenceVectors(dir: string, f: VectorFixture): Map<number, FixtureRun> {
  const { C, d, N } = f;
  const rng = new Rng(f.seed);
  const weight = rng.fillNormal(new Float32Array(C * d), 0, 0.1);
  const emb = rng.fillNormal(new Float32Array(N * d));
  const labels = Int32Array.from(f.labels ?? Array.from({ length: N }, () => rng.int(C)));
  mkdirSync(join(dir, 'input'), { recursive: true });
  writeNpy(join(dir, 'input', 'embeddings.npy'), emb, [N, d]);
  writeNpy(join(dir, 'input', 'weight.npy'), weight, [C, d]);
  writeNpy(join(dir, 'input', 'labels.npy'), BigInt64Array.from(labels, (l) => BigInt(l)), [N]);
  const spec = {
    embeddings: 'embeddings.npy',
    labels: 'labels.npy',
    weight: 'weight.npy',
    s: f.s,
    m1: f.m1,
    m2: f.m2,
    m3: f.m3,
    sample_rate: f.sampleRate,
    seed: f.seed,
    interclass_filtering_threshold: f.threshold ?? 0,
    sgd: f.sgd,
  };
  writeFileSync(join(dir, 'input', 'spec.json'), JSON.stringify(spec, null, 1));
  const runs = new Map<number, FixtureRun>();
  const i64 = (xs: ArrayLike<number>) => BigInt64Array.from(Array.from(xs), (v) => BigInt(v));
  for (const W of f.worldSizes) {
    // sampling per rank, with keys drawn here (float32, as torch.rand) and written for injection
    const keysOf: (Float32Array | null)[] = [];
    const sampledLocal: number[][] = [];
    const shards = Array.from({ length: W }, (_, r) => naiveShard(C, W, r));
    const numSample: number[] = [];
    shards.forEach(({ classStart, numLocal }, r) => {
      const local = Array.from(labels, (l) => (l >= classStart && l < classStart + numLocal ? l - classStart : -1));
      if (f.sampleRate >= 1) {
        keysOf.push(null);
        numSample.push(numLocal);
        sampledLocal.push(Array.from({ length: numLocal }, (_, i) => i));
        return;
      }
      const keyRng = new Rng(f.seed * 1000 + W * 10 + r);
      const keys = Float32Array.from({ length: numLocal }, () => keyRng.uniform());
      keysOf.push(keys);
      numSample.push(Math.floor(f.sampleRate * numLocal));
      sampledLocal.push(naiveSample(local, numLocal, numSample[r]!, keys));
    });
    const sampled = sampledLocal.flatMap((ids, r) => ids.map((l) => l + shards[r]!.classStart));
    const K = sampled.length;
    // the problem restricted to the sampled centers: the softmax runs over exactly these columns
    const sub: Problem = {
      C: K,
      d,
      N,
      emb: Float64Array.from(emb),
      labels: Int32Array.from(labels, (l) => sampled.indexOf(l)),
      weight: Float64Array.from(sampled.flatMap((c) => Array.from(weight.subarray(c * d, (c + 1) * d)))),
    };
    if (sub.labels.some((l) => l < 0)) throw new Error('fixture: a positive class was not sampled');
    const ref = naiveReference(sub, { s: f.s, m2: f.m2, m3: f.m3, threshold: f.threshold ?? 0 });
    const gradW = new Float64Array(C * d);
    sampled.forEach((c, k) => gradW.set(ref.gradW.subarray(k * d, (k + 1) * d), c * d));
    let weightAfter: Float64Array | null = null;
    if (f.sgd) {
      // PyTorch SGD, first step: g = grad + wd·w; buf = μ·0 + g (= g); w -= lr·buf
      const { lr, momentum, weight_decay: wd } = f.sgd;
      weightAfter = Float64Array.from(weight);
      const moves = new Set(f.update === 'dense' ? Array.from({ length: C }, (_, c) => c) : sampled);
      for (const c of moves) {
        for (let j = 0; j < d; j++) {
          const w = weight[c * d + j]!;
          const g = gradW[c * d + j]! + wd * w;
          const buf = momentum * 0 + g;
          weightAfter[c * d + j] = w - lr * buf;
        }
      }
    }
    for (const dtype of ['float32', 'float64'] as const) {
      const F = dtype === 'float32' ? Float32Array : Float64Array;
      const out = join(dir, dtype, `ws${W}`);
      mkdirSync(out, { recursive: true });
      writeNpy(join(out, 'grad_embeddings.npy'), F.from(ref.gradE), [N, d]);
      writeNpy(join(out, 'grad_embeddings_raw.npy'), F.from(ref.gradE.map((v) => v * W)), [N, d]);
      writeNpy(join(out, 'grad_weight.npy'), F.from(gradW), [C, d]);
      writeNpy(join(out, 'sampled_index.npy'), i64(sampled), [K]);
      if (weightAfter) writeNpy(join(out, 'weight_after_sgd.npy'), F.from(weightAfter), [C, d]);
      let col = 0;
      shards.forEach(({ classStart, numLocal }, r) => {
        const ids = sampledLocal[r]!;
        const Kr = ids.length;
        const cos = new F(N * Kr);
        const z = new F(N * Kr);
        for (let n = 0; n < N; n++)
          for (let k = 0; k < Kr; k++) {
            cos[n * Kr + k] = ref.cos[n * K + col + k]!;
            z[n * Kr + k] = ref.logits[n * K + col + k]!;
          }
        col += Kr;
        writeNpy(join(out, `cos_logits_r${r}.npy`), cos, [N, Kr]);
        writeNpy(join(out, `margin_logits_r${r}.npy`), z, [N, Kr]);
        const remapped = Array.from(labels, (l) => (l >= classStart && l < classStart + numLocal ? ids.indexOf(l - classStart) : -1));
        writeNpy(join(out, `labels_remapped_r${r}.npy`), i64(remapped), [N]);
        const keys = keysOf[r];
        if (keys) writeNpy(join(out, `rand_perm_r${r}.npy`), keys, [numLocal]);
      });
      const result = {
        loss: dtype === 'float32' ? Math.fround(ref.loss) : ref.loss,
        world_size: W,
        dtype,
        batch: N,
        embedding_size: d,
        num_classes: C,
        params: spec,
        ranks: shards.map(({ classStart, numLocal }, r) => ({ rank: r, class_start: classStart, num_local: numLocal, num_sample: numSample[r] })),
        notes: 'generated by writeReferenceVectors (testing.test-util.ts) from a naive float64 reference',
      };
      writeFileSync(join(out, 'result.json'), JSON.stringify(result, null, 1));
    }
    runs.set(W, { loss: ref.loss, sampled, numLocal: shards.map((s) => s.numLocal), numSample });
  }
  return runs;
}
