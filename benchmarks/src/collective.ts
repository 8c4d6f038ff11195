/**
 * allReduce and allGather bandwidth against message size for the local (in-thread), threads (worker_threads +
 * SharedArrayBuffer) and MPI (2 mpirun processes, shared memory) backends of @pfc/collective, 2 ranks each.
 *
 * `npm run bench -w @pfc/benchmarks -- collective [--sizes 1024,65536,...] [--budget-mb 256]`
 *
 * Bandwidth is "algorithm bandwidth" as nccl-tests reports it: message bytes / time of one call (allReduce: the
 * float32 buffer each rank reduces; allGather: the gathered output, each rank contributing 1/worldSize of it), the
 * time being the slowest rank's mean over the iterations.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCommunicator, runLocal, runThreads, type Communicator } from '@pfc/collective';
import { writeReport, type Row } from './report';

interface RankArgs {
  sizes: number[];
  budgetBytes: number;
}

interface Timing {
  op: 'allReduce' | 'allGather';
  bytes: number;
  iters: number;
  seconds: number;
}

/** Runs on every rank of a group: times allReduce (sum) and allGather for each size; returns the slowest rank's mean per call. */
export async function measureRank(comm: Communicator, args: RankArgs): Promise<Timing[]> {
  const out: Timing[] = [];
  for (const op of ['allReduce', 'allGather'] as const) {
    for (const bytes of args.sizes) {
      const n = Math.max(1, Math.floor(bytes / 4));
      const buf = new Float32Array(op === 'allReduce' ? n : Math.ceil(n / comm.worldSize)).fill(comm.rank + 0.5);
      // The same iteration count on every rank: it depends on the size only.
      const iters = Math.min(2000, Math.max(3, Math.round(args.budgetBytes / bytes)));
      const call = (): Promise<unknown> => (op === 'allReduce' ? comm.allReduce(buf, 'sum') : comm.allGather(buf));
      await call();
      await comm.barrier();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < iters; i++) await call();
      const mine = Number(process.hrtime.bigint() - t0) / 1e9 / iters;
      const slowest = await comm.allReduce(new Float64Array([mine]), 'max');
      out.push({ op, bytes, iters, seconds: slowest[0]! });
    }
  }
  return out;
}

const mpiOutEnv = 'PFC_BENCH_COLLECTIVE_OUT';

/** Entry of each mpirun rank (this file run directly). */
async function mpiRank(): Promise<void> {
  const args = JSON.parse(process.env.PFC_BENCH_COLLECTIVE_ARGS ?? '{}') as RankArgs;
  const comm = await createCommunicator({ backend: 'mpi' });
  const timings = await measureRank(comm, args);
  if (comm.rank === 0) writeFileSync(process.env[mpiOutEnv]!, JSON.stringify(timings));
  await comm.close();
}

async function runMpi(args: RankArgs, np: number): Promise<Timing[] | string> {
  if (spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status !== 0) return 'mpirun not found';
  const dir = mkdtempSync(join(tmpdir(), 'pfc-bench-'));
  const file = join(dir, 'timings.json');
  const mpiArgs = ['-np', String(np), '--oversubscribe', '--mca', 'btl', 'self,vader'];
  if (process.getuid?.() === 0) mpiArgs.push('--allow-run-as-root');
  const child = spawn('mpirun', [...mpiArgs, '-x', mpiOutEnv, '-x', 'PFC_BENCH_COLLECTIVE_ARGS', process.execPath, '--conditions=@pfc/source', '-r', 'tsx/cjs', __filename], {
    env: { ...process.env, [mpiOutEnv]: file, PFC_BENCH_COLLECTIVE_ARGS: JSON.stringify(args) },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  try {
    if (code !== 0 || !existsSync(file)) return `mpirun exited with ${code}`;
    return JSON.parse(readFileSync(file, 'utf8')) as Timing[];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function label(bytes: number): string {
  return bytes >= 1 << 20 ? `${bytes / (1 << 20)} MiB` : `${bytes / 1024} KiB`;
}

export default async function collective(argv: string[]): Promise<void> {
  const opt = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const sizes = (opt('--sizes') ?? [1 << 10, 16 << 10, 256 << 10, 4 << 20, 64 << 20].join(',')).split(',').map(Number);
  const args: RankArgs = { sizes, budgetBytes: Number(opt('--budget-mb') ?? 256) * (1 << 20) };
  const worldSize = 2;

  const local = await runLocal(worldSize, (c) => measureRank(c, args));
  const threads = await runThreads<Timing[]>(worldSize, { module: __filename, export: 'measureRank', args });
  const threadsBlock = await runThreads<Timing[]>(worldSize, { module: __filename, export: 'measureRank', args, wait: 'block' });
  const mpi = await runMpi(args, worldSize);

  const rows: Row[] = [];
  for (const t of local[0]!) {
    const find = (list: Timing[] | string | undefined): Timing | undefined => (typeof list === 'string' ? undefined : list?.find((x) => x.op === t.op && x.bytes === t.bytes));
    const gbps = (x: Timing | undefined): number | null => (x ? x.bytes / x.seconds / 1e9 : null);
    const th = find(threads[0]);
    const tb = find(threadsBlock[0]);
    const mp = find(mpi);
    rows.push({
      op: t.op,
      size: label(t.bytes),
      bytes: t.bytes,
      'local GB/s': gbps(t),
      'threads GB/s': gbps(th),
      'threads (block) GB/s': gbps(tb),
      'mpi GB/s': gbps(mp),
      'local µs': t.seconds * 1e6,
      'threads µs': th ? th.seconds * 1e6 : null,
      'threads (block) µs': tb ? tb.seconds * 1e6 : null,
      'mpi µs': mp ? mp.seconds * 1e6 : null,
    });
  }
  writeReport({
    name: 'collective',
    description:
      'allReduce (sum, float32) and allGather bandwidth against message size, 2 ranks, for the local (async tasks of one thread), threads (worker_threads + SharedArrayBuffer, 4 MiB slots, async and blocking wait) and MPI (OpenMPI over shared memory, 2 mpirun processes) backends. GB/s = message bytes / mean time of one call on the slowest rank (nccl-tests "algbw").',
    rows,
    notes: [
      typeof mpi === 'string' ? `MPI not measured: ${mpi}.` : 'MPI: OpenMPI, `--mca btl self,vader`, every call checked for mismatches (one 16-byte allgather extra, the default `verify: true`).',
      'threads: ranks wait with Atomics.waitAsync (default, the event loop keeps running); threads (block): Atomics.wait (`wait: \'block\'`). local reduces on one thread; threads splits each reduction across the ranks and copies through the shared arena (2 copies per element); MPI uses its own algorithms.',
      'On the 2-core development machine shared with other engineers the numbers are contended: compare backends within one run, not across runs.',
    ],
  });
}

if (require.main === module && process.env[mpiOutEnv]) void mpiRank();
