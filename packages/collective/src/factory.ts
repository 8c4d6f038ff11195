import { PfcError } from '@pfc/core';
import type { Communicator } from './communicator';
import { rankCommunicator } from './context';
import { createLocalGroup } from './local';
import { MpiCommunicator, launchedByMpi } from './mpi';
import { NcclCommunicator } from './nccl';

/** Backends {@link createCommunicator} can make. */
export type CollectiveBackend = 'local' | 'threads' | 'mpi' | 'nccl';
export const COLLECTIVE_BACKENDS: readonly CollectiveBackend[] = ['local', 'threads', 'mpi', 'nccl'];

/** Options of {@link createCommunicator}. */
export interface CreateCommunicatorOptions {
  /**
   * Backend; default: from the environment (see {@link communicatorFromEnv}). `local`: a group of one rank.
   * `threads`: this thread's rank inside {@link runThreads}. `mpi`: the MPI world. `nccl`: GPUs, bootstrapped
   * through MPI when launched by mpirun, else through the file `PFC_NCCL_ID_FILE` with `PFC_RANK`/`PFC_WORLD_SIZE`.
   */
  backend?: CollectiveBackend;
  /** Milliseconds a collective may wait for the other ranks before `E_COLLECTIVE_TIMEOUT`. */
  timeoutMs?: number;
  /** CUDA device for `nccl` (default: see {@link ncclDevice}). */
  device?: number;
  /** Environment to read (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

/**
 * The backend the environment asks for: `PFC_COLLECTIVE` if set, else `mpi` when an MPI launcher started the
 * process (`OMPI_COMM_WORLD_SIZE`, `PMI_SIZE` or `PMIX_RANK` set), else `threads` inside a {@link runThreads}
 * rank, else `local` (one rank).
 */
export function backendFromEnv(env: NodeJS.ProcessEnv = process.env): CollectiveBackend {
  const forced = env.PFC_COLLECTIVE;
  if (forced) {
    if (!(COLLECTIVE_BACKENDS as readonly string[]).includes(forced)) {
      throw new PfcError('E_ARGUMENT', `PFC_COLLECTIVE must be one of ${COLLECTIVE_BACKENDS.join(', ')}, got ${JSON.stringify(forced)}`);
    }
    return forced as CollectiveBackend;
  }
  if (launchedByMpi(env)) return 'mpi';
  return rankCommunicator() ? 'threads' : 'local';
}

function intEnv(env: NodeJS.ProcessEnv, ...names: string[]): number | undefined {
  for (const n of names) {
    const v = env[n];
    if (v !== undefined && /^\d+$/.test(v)) return Number(v);
  }
  return undefined;
}

/**
 * The CUDA device an NCCL rank uses: `PFC_CUDA_DEVICE` if set; 0 when `CUDA_VISIBLE_DEVICES` leaves this process
 * one GPU; else the node-local rank (`OMPI_COMM_WORLD_LOCAL_RANK`, `LOCAL_RANK`, `MPI_LOCALRANKID`); else 0.
 */
export function ncclDevice(env: NodeJS.ProcessEnv = process.env): number {
  const forced = intEnv(env, 'PFC_CUDA_DEVICE');
  if (forced !== undefined) return forced;
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined && visible.split(',').filter((d) => d.trim() !== '').length === 1) return 0;
  return intEnv(env, 'OMPI_COMM_WORLD_LOCAL_RANK', 'LOCAL_RANK', 'MPI_LOCALRANKID') ?? 0;
}

/**
 * Makes the communicator of this process (or thread) for `options.backend`, or for the backend the environment
 * names when none is given. Throws `E_BACKEND_UNAVAILABLE` with what to install when a backend cannot be used.
 *
 * @example
 * // train.ts, started as `mpirun -np 2 node train.js` (MPI) or plainly (one local rank):
 * const comm = await createCommunicator();
 * const grad = await comm.allReduce(new Float32Array(512), 'sum');
 * await comm.close();
 */
export async function createCommunicator(options: CreateCommunicatorOptions = {}): Promise<Communicator> {
  const env = options.env ?? process.env;
  const backend = options.backend ?? backendFromEnv(env);
  switch (backend) {
    case 'local':
      return createLocalGroup(1, { timeoutMs: options.timeoutMs })[0]!;
    case 'threads': {
      const c = rankCommunicator();
      if (!c) {
        throw new PfcError('E_BACKEND_UNAVAILABLE', 'threads backend: this thread is not a rank started by runThreads(worldSize, { module, export }); start the ranks with runThreads', {
          details: { backend },
        });
      }
      return c;
    }
    case 'mpi':
      if (!launchedByMpi(env) && env.PFC_MPI_SINGLETON !== '1') {
        // A singleton MPI world of one rank is legal but almost always a launch mistake.
        throw new PfcError('E_BACKEND_UNAVAILABLE', 'mpi backend: this process was not started by mpirun (no OMPI_COMM_WORLD_SIZE / PMI_SIZE); run `mpirun -np <N> node <script>`, or set PFC_MPI_SINGLETON=1 for a one-rank MPI world', {
          details: { backend },
        });
      }
      return MpiCommunicator.world({ timeoutMs: options.timeoutMs });
    case 'nccl': {
      const device = options.device ?? ncclDevice(env);
      if (launchedByMpi(env)) return NcclCommunicator.create({ bootstrap: { communicator: MpiCommunicator.world({ timeoutMs: options.timeoutMs }) }, device, timeoutMs: options.timeoutMs });
      const file = env.PFC_NCCL_ID_FILE;
      const rank = intEnv(env, 'PFC_RANK');
      const worldSize = intEnv(env, 'PFC_WORLD_SIZE');
      if (!file || rank === undefined || worldSize === undefined) {
        throw new PfcError('E_BACKEND_UNAVAILABLE', 'nccl backend: start the ranks with mpirun, or set PFC_NCCL_ID_FILE (a path every rank can read), PFC_RANK and PFC_WORLD_SIZE', {
          details: { backend },
        });
      }
      return NcclCommunicator.create({ bootstrap: { file, rank, worldSize, timeoutMs: options.timeoutMs }, device, timeoutMs: options.timeoutMs });
    }
    default:
      throw new PfcError('E_ARGUMENT', `createCommunicator: argument 'backend' must be one of ${COLLECTIVE_BACKENDS.join(', ')}, got ${JSON.stringify(backend)}`);
  }
}

/** {@link createCommunicator} with the backend chosen by the environment (`PFC_COLLECTIVE`, mpirun, runThreads). */
export async function communicatorFromEnv(options: Omit<CreateCommunicatorOptions, 'backend'> = {}): Promise<Communicator> {
  return createCommunicator({ ...options, backend: backendFromEnv(options.env ?? process.env) });
}

/** Options of {@link runRank}. */
export interface RunRankOptions extends CreateCommunicatorOptions {
  /**
   * Called with the error before anything else happens to it (print it here: under MPI the job is aborted next,
   * which ends this process).
   */
  onError?: (err: unknown, comm: Communicator) => void;
}

/**
 * Runs `fn` as this process's rank: makes the communicator (`options.backend`, else from the environment), calls
 * `fn(comm)`, closes the communicator and returns `fn`'s result. If `fn` throws, `onError` sees the error first;
 * then, for a multi-rank MPI or NCCL job, `comm.abort()` ends the whole job (`MPI_Abort`), because the other ranks
 * would otherwise wait in their next collective until the timeout; otherwise the error is rethrown.
 *
 * @example
 * // train.ts — `node train.js` (one rank) or `mpirun -np 4 node train.js` (four MPI ranks), unchanged:
 * await runRank(async (comm) => trainer.fit(config, { comm }), {
 *   backend: opts.backend,
 *   onError: (err) => console.error(`rank failed: ${(err as Error).message}`),
 * });
 */
export async function runRank<R>(fn: (comm: Communicator) => Promise<R> | R, options: RunRankOptions = {}): Promise<R> {
  const comm = await createCommunicator(options);
  let result: R;
  try {
    result = await fn(comm);
  } catch (err) {
    options.onError?.(err, comm);
    if (comm.worldSize > 1 && (comm.backend === 'mpi' || comm.backend === 'nccl')) comm.abort?.(err);
    throw err;
  }
  await comm.close();
  return result;
}
