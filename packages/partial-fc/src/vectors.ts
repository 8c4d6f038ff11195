import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { PfcError, initBackend, npyToFloat64, readNpy } from '@pfc/core';
import { createCommunicator, runLocal, runThreads, type Communicator } from '@pfc/collective';
import { PartialFC, type StepResult } from './partial-fc';
import { shardOf } from './sharding';

/** Arguments of {@link vectorRank}. */
export interface VectorRankArgs {
  dir: string;
  dtype: 'float32' | 'float64';
  worldSize: number;
  update: 'sparse' | 'dense';
  tensorBackend: 'cpu' | 'wasm';
}

/** What one rank of {@link vectorRank} returns (structured-cloneable). */
export interface VectorRankResult {
  res: StepResult;
  weightAfter: Float64Array | null;
  classStart: number;
  numLocal: number;
}

/** The module that exports {@link vectorRank}: this file, or in a build the package entry next to the CLI bundle. */
function rankModule(): string {
  return basename(__filename).startsWith('cli.') ? join(dirname(__filename), `index${extname(__filename)}`) : __filename;
}

function readSpec(dir: string): VectorSpec {
  const specPath = join(dir, 'input', 'spec.json');
  if (!existsSync(specPath)) {
    throw new PfcError('E_VECTOR_DIR', `check-vectors: ${specPath} does not exist; expected a vector directory with input/spec.json`, { details: { dir } });
  }
  return JSON.parse(readFileSync(specPath, 'utf8')) as VectorSpec;
}

/**
 * One rank of a vector check (exported so worker-thread launchers can run it): builds the PartialFC of the spec on
 * `comm`, loads the full weight, runs one step on this rank's slice of the batch with the reference's keys or
 * forced index, and returns the step result.
 */
export async function vectorRank(comm: Communicator, args: VectorRankArgs): Promise<VectorRankResult> {
  const { dir, dtype, update } = args;
  if (dtype === 'float32') await initBackend({ backend: args.tensorBackend, log: null });
  const spec = readSpec(dir);
  const emb = load(join(dir, 'input', spec.embeddings));
  const labels = load(join(dir, 'input', spec.labels)).data;
  const weight = load(join(dir, 'input', spec.weight));
  const [Ntot, d] = emb.shape as [number, number];
  const C = weight.shape[0]!;
  const W = comm.worldSize;
  const B = Ntot / W;
  const ref = join(dir, dtype, `ws${W}`);
  let sampleIndex: Float64Array | null = null;
  if (typeof spec.sample_index === 'string') sampleIndex = load(join(dir, 'input', spec.sample_index)).data;
  else if (Array.isArray(spec.sample_index)) sampleIndex = Float64Array.from(spec.sample_index);
  const sgd = spec.sgd ?? null;
  const F = dtype === 'float64' ? Float64Array : Float32Array;
  const pfc = new PartialFC({
    numClasses: C,
    embeddingSize: d,
    sampleRate: spec.sample_rate,
    margin: { s: spec.s, m1: spec.m1, m2: spec.m2, m3: spec.m3, interclassFilteringThreshold: spec.interclass_filtering_threshold ?? 0 },
    comm,
    seed: spec.seed ?? 0,
    dtype,
    update,
    momentum: sgd?.momentum ?? 0.9,
    weightDecay: sgd?.weight_decay ?? 5e-4,
    init: 'zeros',
  });
  pfc.setWeights(weight.data);
  const r = comm.rank;
  const keys = loadOptional(join(ref, `rand_perm_r${r}.npy`));
  const res = await pfc.forwardBackward(F.from(emb.data.subarray(r * B * d, (r + 1) * B * d)), labels.subarray(r * B, (r + 1) * B), {
    returnGradWeight: true,
    returnLogits: true,
    ...(keys ? { keys } : {}),
    ...(sampleIndex ? { sampleIndex } : {}),
    ...(sgd ? { lr: sgd.lr } : {}),
  });
  return { res, weightAfter: sgd ? pfc.getWeights() : null, classStart: pfc.classStart, numLocal: pfc.numLocal };
}

/** Options of {@link checkVectors}. */
export interface CheckVectorsOptions {
  /** Which reference run to compare with (`<dir>/<dtype>/ws<N>`). Default `float32`. */
  dtype?: 'float32' | 'float64';
  /** World sizes to run (each needs `<dir>/<dtype>/ws<N>`). Default: every `ws<N>` present. */
  worldSizes?: number[];
  /** Bank update semantics for the SGD check. Default `dense` when the spec has an SGD step (the reference V2). */
  update?: 'sparse' | 'dense';
  /**
   * How ranks run: `local` (in-thread ranks, default), `threads` (worker threads, `runThreads`) or `mpi` (this process
   * is one rank of an `mpirun` job: the world size is the job's, and every rank returns the same report).
   */
  backend?: 'local' | 'threads' | 'mpi';
  /** tfjs backend of the float32 matmuls in every rank. Default `cpu`. */
  tensorBackend?: 'cpu' | 'wasm';
  /** Tolerance overrides (max abs error). */
  tolerance?: Partial<Tolerances>;
}

/** Max abs error allowed per compared quantity. */
export interface Tolerances {
  loss: number;
  grad: number;
  cos: number;
  margin: number;
  weight: number;
  /** Per-entry extra margin-logit tolerance, as a multiple of the entry's |dz/dt| (float32 acos conditioning). */
  conditioning: number;
}

/**
 * Default tolerances (max abs error). float64: 1e-9 everywhere. float32: 1e-5 for loss, embedding gradients, cosines
 * and weights; margin logits 1e-4 (s = 64 scales the cosine's rounding) plus, per ArcFace target entry, 8 float32
 * ulps of t times |d cos(acos t + m2)/dt| (near t = ±1 acos is ill-conditioned and the reference's float32 acos is
 * off by up to 0.015 on the vectors); bank gradients 1e-5 relative to the largest reference value (float32
 * resolution at the vectors' |grad| ≈ 160 is 1.5e-5; the reference's own float32 ws1/ws2 runs differ by 1.5e-5).
 */
export function defaultTolerances(dtype: 'float32' | 'float64'): Tolerances {
  return dtype === 'float32'
    ? { loss: 1e-5, grad: 1e-5, cos: 1e-5, margin: 1e-4, weight: 1e-5, conditioning: 8 * 2 ** -24 }
    : { loss: 1e-9, grad: 1e-9, cos: 1e-9, margin: 1e-9, weight: 1e-9, conditioning: 0 };
}

/** Comparison of one world size. */
export interface WorldSizeCheck {
  worldSize: number;
  loss: number;
  referenceLoss: number;
  lossError: number;
  gradEmbeddingsError: number;
  gradEmbeddingsRawError: number | null;
  gradWeightError: number | null;
  cosLogitsError: number | null;
  marginLogitsError: number | null;
  labelsRemappedEqual: boolean | null;
  sampledSetEqual: boolean | null;
  weightAfterSgdError: number | null;
  pass: boolean;
}

/** What {@link checkVectors} reports: one object, printable as JSON. */
export interface CheckVectorsReport {
  dir: string;
  dtype: 'float32' | 'float64';
  update: 'sparse' | 'dense';
  backend: string;
  /** This process's rank (0 unless `backend` is `mpi`; with mpi every rank returns the same report). */
  rank: number;
  tolerance: Tolerances;
  runs: WorldSizeCheck[];
  max: {
    lossError: number;
    gradEmbeddingsError: number;
    gradWeightError: number | null;
    cosLogitsError: number | null;
    marginLogitsError: number | null;
    weightAfterSgdError: number | null;
  };
  sampledSetEqual: boolean | null;
  pass: boolean;
}

interface VectorSpec {
  embeddings: string;
  labels: string;
  weight: string;
  s: number;
  m1: number;
  m2: number;
  m3: number;
  sample_rate: number;
  seed?: number;
  interclass_filtering_threshold?: number;
  sample_index?: string | number[] | null;
  sgd?: { lr: number; momentum?: number; weight_decay?: number } | null;
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>, what: string): number {
  if (a.length !== b.length) {
    throw new PfcError('E_VECTOR_SHAPE', `check-vectors: ${what} has ${a.length} values, the reference ${b.length}`, { details: { what } });
  }
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i]! - b[i]!);
    m = Number.isNaN(e) ? Infinity : Math.max(m, e);
  }
  return m;
}

const maxOf = (xs: (number | null)[]): number | null => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? Math.max(...v) : null;
};

function load(path: string): { data: Float64Array; shape: number[] } {
  const a = readNpy(path);
  return { data: npyToFloat64(a), shape: a.shape };
}

function loadOptional(path: string): Float64Array | null {
  return existsSync(path) ? load(path).data : null;
}

/**
 * Runs our Partial FC on a reference vector directory (layout of `peer-semantics.md`: `input/spec.json` + `.npy`,
 * `<dtype>/ws<N>/…`), with the reference's injected sampling keys or forced index, and reports the max abs error of
 * every quantity. Works on any directory in that layout, e.g. one a user produced from their own build.
 */
export async function checkVectors(dir: string, options: CheckVectorsOptions = {}): Promise<CheckVectorsReport> {
  const dtype = options.dtype ?? 'float32';
  const spec = readSpec(dir);
  const emb = load(join(dir, 'input', spec.embeddings));
  const weight = load(join(dir, 'input', spec.weight));
  const [Ntot, d] = emb.shape as [number, number];
  const C = weight.shape[0]!;
  const sgd = spec.sgd ?? null;
  const backendName = options.backend ?? 'local';
  const update = options.update ?? 'dense';
  const tol = { ...defaultTolerances(dtype), ...options.tolerance };
  let worldSizes = options.worldSizes;
  if (!worldSizes) {
    worldSizes = [];
    for (let w = 1; w <= 64; w++) if (existsSync(join(dir, dtype, `ws${w}`))) worldSizes.push(w);
  }
  let mpi: Communicator | null = null;
  if (backendName === 'mpi') {
    mpi = await createCommunicator({ backend: 'mpi' });
    if (options.worldSizes && (options.worldSizes.length !== 1 || options.worldSizes[0] !== mpi.worldSize)) {
      await mpi.close();
      throw new PfcError(
        'E_WORLD_SIZE',
        `check-vectors: with the mpi backend the world size is the mpirun job's (${mpi.worldSize}); got --world-size ${options.worldSizes.join(',')}`,
        { details: { worldSize: mpi.worldSize } },
      );
    }
    worldSizes = [mpi.worldSize];
  }
  try {
    return await compareRuns();
  } finally {
    await mpi?.close();
  }

  async function compareRuns(): Promise<CheckVectorsReport> {
  const runs: WorldSizeCheck[] = [];
  for (const W of worldSizes!) {
    const ref = join(dir, dtype, `ws${W}`);
    if (!existsSync(ref)) {
      throw new PfcError('E_VECTOR_DIR', `check-vectors: ${ref} does not exist (no reference run for world size ${W})`, { details: { dir, worldSize: W } });
    }
    if (Ntot % W !== 0) {
      throw new PfcError('E_WORLD_SIZE', `check-vectors: the global batch ${Ntot} does not split over world size ${W}`, { details: { batch: Ntot, worldSize: W } });
    }
    const B = Ntot / W;
    const args: VectorRankArgs = { dir, dtype, worldSize: W, update, tensorBackend: options.tensorBackend ?? 'cpu' };
    const perRank = mpi
      ? await gatherRankResults(mpi, await vectorRank(mpi, args))
      : backendName === 'threads'
        ? await runThreads<VectorRankResult, VectorRankArgs>(W, { module: rankModule(), export: 'vectorRank', args })
        : await runLocal(W, (comm) => vectorRank(comm, args));
    // assemble global arrays in the reference's layout
    const gradE = new Float64Array(Ntot * d);
    const gradWFull = new Float64Array(C * d);
    const weightAfter = sgd ? new Float64Array(C * d) : null;
    let cosErr: number | null = null;
    let marginErr: number | null = null;
    let labelsEqual: boolean | null = null;
    let marginOk = true;
    const sampledGlobal: number[] = [];
    perRank.forEach(({ res, classStart }, r) => {
      gradE.set(res.gradEmbeddings, r * B * d);
      res.sampledIndex.forEach((li, k) => {
        sampledGlobal.push(li + classStart);
        for (let j = 0; j < d; j++) gradWFull[(li + classStart) * d + j] = res.gradWeight![k * d + j]!;
      });
      const cos = loadOptional(join(ref, `cos_logits_r${r}.npy`));
      if (cos) cosErr = Math.max(cosErr ?? 0, maxAbs(res.cosLogits!, cos, `cos_logits_r${r}`));
      const ml = loadOptional(join(ref, `margin_logits_r${r}.npy`));
      if (ml) {
        marginErr = Math.max(marginErr ?? 0, maxAbs(res.marginLogits!, ml, `margin_logits_r${r}`));
        const K = res.sampledIndex.length;
        for (let i = 0; i < ml.length; i++) {
          const n = Math.floor(i / K);
          const isTarget = res.labels[n] === i % K;
          const t = res.cosLogits![i]!;
          const slope = isTarget && spec.m3 === 0 && spec.m1 === 1
            ? (spec.s * Math.abs(Math.sin(Math.acos(t) + spec.m2))) / Math.max(Math.sqrt(1 - t * t), 1e-12)
            : spec.s;
          if (!(Math.abs(res.marginLogits![i]! - ml[i]!) <= tol.margin + tol.conditioning * slope)) marginOk = false;
        }
      }
      const lr = loadOptional(join(ref, `labels_remapped_r${r}.npy`));
      if (lr) labelsEqual = (labelsEqual ?? true) && lr.length === res.labels.length && lr.every((v, i) => v === res.labels[i]);
    });
    if (weightAfter) perRank.forEach(({ weightAfter: w, classStart }) => weightAfter.set(w!, classStart * d));
    const result = JSON.parse(readFileSync(join(ref, 'result.json'), 'utf8')) as { loss: number };
    const refGradE = load(join(ref, 'grad_embeddings.npy')).data;
    const refGradERaw = loadOptional(join(ref, 'grad_embeddings_raw.npy'));
    const refGradW = loadOptional(join(ref, 'grad_weight.npy'));
    const refSampled = loadOptional(join(ref, 'sampled_index.npy'));
    let weightErr: number | null = null;
    if (weightAfter) {
      const refW = loadOptional(join(ref, 'weight_after_sgd.npy')) ?? loadOptional(join(ref, 'weight_after.npy'));
      if (refW) weightErr = maxAbs(weightAfter, refW, 'weight after SGD');
    }
    const loss = perRank[0]!.res.loss;
    const rawOurs = gradE.map((v) => v * W);
    const check: WorldSizeCheck = {
      worldSize: W,
      loss,
      referenceLoss: result.loss,
      lossError: Math.abs(loss - result.loss),
      gradEmbeddingsError: maxAbs(gradE, refGradE, 'grad_embeddings'),
      gradEmbeddingsRawError: refGradERaw ? maxAbs(rawOurs, refGradERaw, 'grad_embeddings_raw') : null,
      gradWeightError: refGradW ? maxAbs(gradWFull, refGradW, 'grad_weight') : null,
      cosLogitsError: cosErr,
      marginLogitsError: marginErr,
      labelsRemappedEqual: labelsEqual,
      sampledSetEqual: refSampled ? refSampled.length === sampledGlobal.length && refSampled.every((v, i) => v === sampledGlobal[i]) : null,
      weightAfterSgdError: weightErr,
      pass: false,
    };
    check.pass =
      !Number.isNaN(check.lossError) &&
      check.lossError <= tol.loss &&
      check.gradEmbeddingsError <= tol.grad &&
      (check.gradEmbeddingsRawError === null || check.gradEmbeddingsRawError <= tol.grad * W) &&
      (check.gradWeightError === null || check.gradWeightError <= (dtype === 'float32' ? tol.grad * Math.max(1, maxAbs(refGradW!, new Float64Array(refGradW!.length), 'grad_weight')) : tol.grad)) &&
      (check.cosLogitsError === null || check.cosLogitsError <= tol.cos) &&
      marginOk &&
      check.labelsRemappedEqual !== false &&
      check.sampledSetEqual !== false &&
      (check.weightAfterSgdError === null || check.weightAfterSgdError <= tol.weight);
    runs.push(check);
    // the shard layout is part of the contract: check it against result.json when present
    const ranks = (result as { ranks?: { class_start: number; num_local: number }[] }).ranks;
    ranks?.forEach((rk, r) => {
      const sh = shardOf(C, W, r);
      if (sh.classStart !== rk.class_start || sh.numLocal !== rk.num_local) check.pass = false;
    });
  }
  const sets = runs.map((r) => r.sampledSetEqual);
  return {
    dir,
    dtype,
    update,
    backend: backendName,
    rank: mpi?.rank ?? 0,
    tolerance: tol,
    runs,
    max: {
      lossError: Math.max(...runs.map((r) => r.lossError)),
      gradEmbeddingsError: Math.max(...runs.map((r) => r.gradEmbeddingsError)),
      gradWeightError: maxOf(runs.map((r) => r.gradWeightError)),
      cosLogitsError: maxOf(runs.map((r) => r.cosLogitsError)),
      marginLogitsError: maxOf(runs.map((r) => r.marginLogitsError)),
      weightAfterSgdError: maxOf(runs.map((r) => r.weightAfterSgdError)),
    },
    sampledSetEqual: sets.includes(false) ? false : sets.includes(true) ? true : null,
    pass: runs.length > 0 && runs.every((r) => r.pass),
  };
  }
}

/**
 * Every rank's {@link VectorRankResult}, in rank order, on every rank of a multi-process job: each result is
 * serialised (typed arrays tagged with their type; doubles print exactly in JSON) and all-gathered as bytes.
 */
export async function gatherRankResults(comm: Communicator, mine: VectorRankResult): Promise<VectorRankResult[]> {
  const json = JSON.stringify(mine, (_k, v: unknown) =>
    ArrayBuffer.isView(v) && !(v instanceof DataView) ? { __typed: v.constructor.name, data: Array.from(v as unknown as ArrayLike<number>) } : v,
  );
  const bytes = Buffer.from(json, 'utf8');
  const lengths = await comm.allGather(new Int32Array([bytes.length]));
  const words = new Int32Array(Math.ceil(bytes.length / 4));
  new Uint8Array(words.buffer).set(bytes);
  const all = await comm.allGather(words);
  const out: VectorRankResult[] = [];
  let offsetWords = 0;
  for (const len of lengths) {
    const text = Buffer.from(all.buffer, all.byteOffset + offsetWords * 4, len).toString('utf8');
    out.push(
      JSON.parse(text, (_k, v: { __typed?: string; data?: number[] }) => {
        if (v && typeof v === 'object' && typeof v.__typed === 'string' && Array.isArray(v.data)) {
          const ctor = TYPED[v.__typed];
          if (!ctor) throw new PfcError('E_COLLECTIVE_MISMATCH', `check-vectors: a rank sent an unknown array type ${v.__typed}`);
          return ctor.from(v.data.map((x) => (x === null ? NaN : x)));
        }
        return v;
      }) as VectorRankResult,
    );
    offsetWords += Math.ceil(len / 4);
  }
  return out;
}

const TYPED: Record<string, { from(a: ArrayLike<number>): ArrayBufferView }> = {
  Float32Array,
  Float64Array,
  Int32Array,
  Uint32Array,
  Uint16Array,
  Uint8Array,
  Int8Array,
  Int16Array,
};
