/**
 * Partial FC step time and peak memory: B = 128 (global), D = 512, sample rate 0.1 and 1.0, 10k–2M classes, bank
 * storage float32 and float16. Each configuration runs in its own child process (so peak RSS is its own) with the
 * ranks as worker threads (`runThreads`, wasm backend in every rank). Subject: the sparse bank update (original
 * Partial FC); baseline in the same run: the same step with the dense update of the reference V2 (every row decays),
 * and the sr = 1.0 rows are the full-softmax (model-parallel) baseline of the sr = 0.1 rows.
 *
 * Args: `--sizes 10000,100000` (default 10k,100k,1M,2M), `--world-size 2`, `--storage float32,float16`,
 * `--rates 0.1,1`, `--capacity 8000000` (extra float16 sr 0.1 rows beyond the grid, for the largest class count that
 * trains in memory).
 */
import { fork } from 'node:child_process';
import { loadavg } from 'node:os';
import { isMainThread } from 'node:worker_threads';
import { Rng, initBackend } from '@pfc/core';
import { runThreads, type Communicator } from '@pfc/collective';
import { PartialFC } from '@pfc/partial-fc';
import { writeReport, type Row } from './report';

interface BenchConfig {
  numClasses: number;
  sampleRate: number;
  storage: 'float32' | 'float16';
  worldSize: number;
  batch: number;
  dim: number;
  warmup: number;
  steps: number;
  baselineSteps: number;
}

interface RankTimes {
  initMs: number;
  stepMs: number[];
  denseMs: number[];
  /** Process CPU time (all threads) per step, ms: under contention, CPU / ranks estimates the uncontended step. */
  stepCpuMs: number[];
  denseCpuMs: number[];
  bankBytes: number;
  loss: number;
}

/** One rank of a configuration (run by `runThreads`). */
export async function benchRank(comm: Communicator, cfg: BenchConfig): Promise<RankTimes> {
  await initBackend({ backend: 'wasm', log: null });
  const t0 = performance.now();
  const pfc = new PartialFC({
    numClasses: cfg.numClasses,
    embeddingSize: cfg.dim,
    sampleRate: cfg.sampleRate,
    margin: { s: 64, m1: 1, m2: 0.5, m3: 0 },
    comm,
    storage: cfg.storage,
    init: 'uniform',
    seed: 1,
  });
  const initMs = performance.now() - t0;
  const B = cfg.batch / comm.worldSize;
  const rng = new Rng(7).fork(comm.rank);
  const emb = rng.fillNormal(new Float32Array(B * cfg.dim));
  const labels = Int32Array.from({ length: B }, () => rng.int(cfg.numClasses));
  let loss = 0;
  const run = async (update: 'sparse' | 'dense') => {
    // a fresh batch each step, as in training
    rng.fillNormal(emb);
    for (let i = 0; i < B; i++) labels[i] = rng.int(cfg.numClasses);
    await comm.barrier();
    const c = process.cpuUsage();
    const t = performance.now();
    loss = (await pfc.forwardBackward(emb, labels, { lr: 0.1, update })).loss;
    await comm.barrier();
    const cpu = process.cpuUsage(c);
    return [performance.now() - t, (cpu.user + cpu.system) / 1000] as const;
  };
  for (let i = 0; i < cfg.warmup; i++) await run('sparse');
  const stepMs: number[] = [];
  const stepCpuMs: number[] = [];
  for (let i = 0; i < cfg.steps; i++) {
    const [w, c] = await run('sparse');
    stepMs.push(w);
    stepCpuMs.push(c);
  }
  const denseMs: number[] = [];
  const denseCpuMs: number[] = [];
  for (let i = 0; i < cfg.baselineSteps; i++) {
    const [w, c] = await run('dense');
    denseMs.push(w);
    denseCpuMs.push(c);
  }
  return { initMs, stepMs, denseMs, stepCpuMs, denseCpuMs, bankBytes: pfc.bank.byteLength, loss };
}

async function childMain(cfg: BenchConfig): Promise<void> {
  const ranks = await runThreads<RankTimes, BenchConfig>(cfg.worldSize, { module: __filename, export: 'benchRank', args: cfg, timeoutMs: 600_000 });
  const maxRssBytes = process.resourceUsage().maxRSS * 1024;
  process.send!({ ranks, maxRssBytes });
}

function runChild(cfg: BenchConfig): Promise<{ ranks: RankTimes[]; maxRssBytes: number }> {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, [], { env: { ...process.env, PFC_BENCH_PARTIAL_FC: JSON.stringify(cfg) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let result: { ranks: RankTimes[]; maxRssBytes: number } | null = null;
    child.on('message', (m) => {
      result = m as typeof result;
    });
    child.on('exit', (code) => (result ? resolve(result) : reject(new Error(`benchmark child for ${JSON.stringify(cfg)} exited with ${code}`))));
  });
}

const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : NaN);

function argList(args: string[], name: string, fallback: string): string[] {
  const i = args.indexOf(name);
  return (i >= 0 && args[i + 1] ? args[i + 1]! : fallback).split(',');
}

export default async function (args: string[]): Promise<void> {
  const sizes = argList(args, '--sizes', '10000,100000,1000000,2000000').map(Number);
  const rates = argList(args, '--rates', '0.1,1').map(Number);
  const storages = argList(args, '--storage', 'float32,float16') as ('float32' | 'float16')[];
  const worldSize = Number(argList(args, '--world-size', '2')[0]);
  const rows: Row[] = [];
  // sr 0.1 rows first (the targets), then the sr 1.0 baselines, which are the slowest
  const configs: BenchConfig[] = [];
  for (const sampleRate of rates)
    for (const numClasses of sizes)
      for (const storage of storages) {
        const big = numClasses * sampleRate >= 500_000;
        configs.push({
          numClasses,
          sampleRate,
          storage,
          worldSize,
          batch: 128,
          dim: 512,
          // sampled steps: the steady state after one warm-up step; full-softmax steps at 1M+ classes take a minute each
          warmup: big && sampleRate >= 1 ? 0 : 1,
          steps: numClasses <= 100_000 || sampleRate < 1 ? 3 : big ? 1 : 2,
          // with sr = 1 every row is sampled, so the dense update is the same step
          baselineSteps: sampleRate >= 1 ? 0 : numClasses <= 100_000 ? 2 : 1,
        });
      }
  // capacity rows: float16 bank, sr 0.1, at class counts beyond the grid (the largest that trains in this machine's memory)
  for (const numClasses of argList(args, '--capacity', '').filter((v) => v !== '').map(Number)) {
    configs.push({ numClasses, sampleRate: 0.1, storage: 'float16', worldSize, batch: 128, dim: 512, warmup: 1, steps: 2, baselineSteps: 0 });
  }
  const load0 = loadavg()[0]!;
  for (const cfg of configs) {
    const { numClasses, sampleRate, storage } = cfg;
    process.stderr.write(`[partial-fc bench] ${JSON.stringify(cfg)}\n`);
    const { ranks, maxRssBytes } = await runChild(cfg);
    const r0 = ranks[0]!;
    const stepMs = median(ranks.map((r) => median(r.stepMs)));
    const denseMs = sampleRate >= 1 ? stepMs : median(ranks.map((r) => median(r.denseMs)));
    const cpuMs = median(r0.stepCpuMs);
    const denseCpuMs = sampleRate >= 1 ? cpuMs : median(r0.denseCpuMs);
    const bankBytes = ranks.reduce((a, r) => a + r.bankBytes, 0);
    rows.push({
      classes: numClasses,
      sampleRate,
      storage,
      ranks: worldSize,
      'step ms (sparse, subject)': Math.round(stepMs),
      'step CPU ms / ranks (sparse)': Math.round(cpuMs / worldSize),
      'step ms (dense V2 update, baseline)': cfg.baselineSteps > 0 || sampleRate >= 1 ? Math.round(denseMs) : null,
      'step CPU ms / ranks (dense)': cfg.baselineSteps > 0 || sampleRate >= 1 ? Math.round(denseCpuMs / worldSize) : null,
      'bank GiB': bankBytes / 2 ** 30,
      'peak RSS GiB': maxRssBytes / 2 ** 30,
      'init s': r0.initMs / 1000,
      loss: r0.loss,
      steps: cfg.steps,
    });
    report(rows, worldSize, [`Load average (1 min) ${load0.toFixed(2)} before the run, ${loadavg()[0]!.toFixed(2)} after this row: above ~2 the wall-clock rows are contended; "CPU ms / ranks" is much less sensitive.`]);
  }
}

/** Writes the report (JSON + markdown) from the rows measured so far. */
export function report(rows: Row[], worldSize: number, extraNotes: string[] = []): void {
  const notes: string[] = [
    ...extraNotes,
    `Global batch 128 (${128 / worldSize} per rank), D = 512, ArcFace s = 64; ranks are worker threads of one process, each with its own wasm backend (1 thread each).`,
    'Step = gather + sample + forward + distributed softmax CE + backward + SGD (lr 0.1, momentum 0.9, wd 5e-4) on the host-memory bank.',
    'Baselines in the same run: the dense V2 update (every row decays each step) and, for sr 0.1, the sr 1.0 row (full softmax, model parallel).',
  ];
  const ref = rows.find((r) => r.classes === 1_000_000 && r.sampleRate === 0.1 && r.storage === 'float32');
  if (ref) {
    const ms = ref['step ms (sparse, subject)'] as number;
    const cpu = ref['step CPU ms / ranks (sparse)'] as number;
    const gib = ref['peak RSS GiB'] as number;
    const f16 = rows.find((r) => r.classes === 1_000_000 && r.sampleRate === 0.1 && r.storage === 'float16');
    notes.push(
      `Reference (PyTorch V2 on this machine, 1M classes, sr 0.1): 10.4 s/step, 8.1 GiB. Ours (float32 bank): ${(ms / 1000).toFixed(2)} s wall (${(10400 / ms).toFixed(1)}× the reference's speed; target ≥ 4×), CPU/ranks ${(cpu / 1000).toFixed(2)} s (${(10400 / cpu).toFixed(1)}× if the 2 cores were ours alone); peak ${gib.toFixed(2)} GiB (${(gib / 8.1).toFixed(2)}× the reference; target ≤ 0.5×)` +
        (f16
          ? `; float16 bank: ${((f16['step ms (sparse, subject)'] as number) / 1000).toFixed(2)} s wall (${(10400 / (f16['step ms (sparse, subject)'] as number)).toFixed(1)}×), CPU/ranks ${((f16['step CPU ms / ranks (sparse)'] as number) / 1000).toFixed(2)} s (${(10400 / (f16['step CPU ms / ranks (sparse)'] as number)).toFixed(1)}×), peak ${(f16['peak RSS GiB'] as number).toFixed(2)} GiB (${((f16['peak RSS GiB'] as number) / 8.1).toFixed(2)}×).`
          : '.') +
        ` The reference figures were measured on the AMD EPYC machine described in the spec's engine notes; this run's machine is named above.`,
    );
  }
  // memory extrapolation from the sr 0.1 float16 rows (the training configuration), bytes per class between the two largest
  const f16 = rows.filter((r) => r.storage === 'float16' && r.sampleRate === 0.1).sort((x, y) => (x.classes as number) - (y.classes as number));
  if (f16.length >= 2) {
    const a = f16[f16.length - 2]!;
    const b = f16[f16.length - 1]!;
    const ca = a.classes as number;
    const cb = b.classes as number;
    const ra = (a['peak RSS GiB'] as number) * 2 ** 30;
    const rb = (b['peak RSS GiB'] as number) * 2 ** 30;
    const slope = (rb - ra) / (cb - ca);
    const budget = 24 * 2 ** 30;
    const maxClasses = Math.floor(cb + (budget - rb) / slope);
    const maxClassesGB = Math.floor(cb + (24e9 - rb) / slope);
    notes.push(
      `float16 storage, sr 0.1: peak RSS grows ${slope.toFixed(0)} bytes/class between ${ca / 1e6}M and ${cb / 1e6}M classes (bank: 2 × 512 × 2 = 2048 bytes/class; the rest is per-step buffers that scale with the sampled rows); extrapolated largest class count whose peak fits in 24 GiB ≈ ${(maxClasses / 1e6).toFixed(1)}M, in 24 GB (24·10⁹ bytes) ≈ ${(maxClassesGB / 1e6).toFixed(1)}M (measured up to ${cb / 1e6}M).`,
    );
  }
  notes.push('Columns "CPU ms / ranks": process CPU time (all threads) during the step divided by the rank count — what the step would take with the cores to ourselves, assuming the ranks run in parallel.');
  writeReport({
    name: 'partial-fc',
    description:
      'Partial FC training step (host-memory class-center bank, sampled margin softmax) for B = 128, D = 512: step time and peak RSS by class count, sample rate and bank storage, against the dense (V2) update and the full softmax measured in the same run.',
    rows,
    notes,
  });
}

if (isMainThread && process.env.PFC_BENCH_PARTIAL_FC && process.send) {
  childMain(JSON.parse(process.env.PFC_BENCH_PARTIAL_FC) as BenchConfig).catch((err) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
