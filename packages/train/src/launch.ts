import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import { backendFromEnv, launchedByMpi, runLocal, runRank, runThreads, type Communicator } from '@pfc/collective';
import { trainThreadRank, type RankArgs } from './rank-entry';
import type { TrainResult } from './trainer';

/**
 * How ranks are started: worker threads (one core each), in-thread tasks, or one rank per process started by
 * `mpirun` (`mpi`: MPI collectives; `nccl`: NCCL collectives bootstrapped over MPI).
 */
export type LaunchBackend = 'threads' | 'local' | 'mpi' | 'nccl';

/**
 * The launch backend the environment asks for: `PFC_COLLECTIVE` when set (checked by `@pfc/collective`'s
 * `backendFromEnv`, an unknown value throws `E_ARGUMENT`), else `mpi` when an MPI launcher started this process
 * (`mpirun`, `srun --mpi=pmix`), else `threads`. An explicit `--backend` / `backend` option wins over it.
 */
export function launchBackendFromEnv(env: NodeJS.ProcessEnv = process.env): LaunchBackend {
  // backendFromEnv answers `local` (one rank) when nothing is set; a launcher of N ranks wants threads then.
  if (env.PFC_COLLECTIVE) return backendFromEnv(env);
  return launchedByMpi(env) ? 'mpi' : 'threads';
}

/** Options of {@link launchTraining}. */
export interface LaunchOptions extends Omit<RankArgs, 'config'> {
  /**
   * Number of ranks (threads/local; default 1). With mpi/nccl the job's size comes from the launcher; when given,
   * it must equal that size (`E_WORLD_SIZE` otherwise).
   */
  worldSize?: number;
  /** Default: {@link launchBackendFromEnv} (`PFC_COLLECTIVE`, else `mpi` under mpirun, else `threads`). */
  backend?: LaunchBackend;
  /** Environment the default backend is read from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Milliseconds a rank waits in one collective (default 30 minutes: rank 0 verifies while the others wait). */
  timeoutMs?: number;
}

function entryModule(): string {
  // From sources (tsx, jest) the sibling .ts; from the build the sibling .js.
  return __filename.endsWith('.ts') ? join(__dirname, 'rank-entry.ts') : join(__dirname, 'rank-entry.js');
}

/**
 * Trains with `worldSize` data-parallel ranks and returns each rank's {@link TrainResult} (rank order; with MPI only
 * this process's). `threads` gives each rank its own worker thread and tensor engine, so ranks use separate cores;
 * `local` runs them as tasks of this thread (one engine, for tests); `mpi`/`nccl` make this process one rank of a job
 * started by `mpirun` (`@pfc/collective`'s `runRank`).
 */
export async function launchTraining(args: RankArgs, options: LaunchOptions = {}): Promise<TrainResult[]> {
  const { worldSize: requested, backend = launchBackendFromEnv(options.env ?? process.env), timeoutMs = 30 * 60_000, env, ...rest } = options;
  const worldSize = requested ?? 1;
  const rankArgs: RankArgs = { ...rest, config: args.config, ...pick(args) };
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new PfcError('E_WORLD_SIZE', `launchTraining: option 'worldSize' must be a positive integer, got ${worldSize}`);
  }
  switch (backend) {
    case 'local':
      return runLocal(worldSize, (comm) => trainThreadRank(comm, rankArgs), { timeoutMs });
    case 'threads': {
      // Rank 0's stderr in its worker is a pipe; the bar is drawn when this (the main) thread's stderr is a terminal.
      const stderr = process.stderr;
      const tty = rankArgs.progressTty ?? (stderr.isTTY ? { columns: stderr.columns } : undefined);
      const args: RankArgs = tty ? { ...rankArgs, progressTty: tty } : rankArgs;
      return runThreads<TrainResult, RankArgs>(worldSize, { module: entryModule(), export: 'trainThreadRank', args, timeoutMs });
    }
    case 'mpi':
    case 'nccl': {
      // One rank per process; a failing rank aborts the whole job instead of leaving the others waiting.
      const rank = (comm: Communicator): Promise<TrainResult> => {
        if (requested !== undefined && requested !== comm.worldSize) {
          throw new PfcError('E_WORLD_SIZE', `launchTraining: option 'worldSize' is ${requested} but the ${backend} job has ${comm.worldSize} rank(s) (the launcher's -np decides)`, {
            details: { worldSize: requested, jobSize: comm.worldSize },
          });
        }
        return trainThreadRank(comm, rankArgs);
      };
      return [
        await runRank(rank, {
          backend,
          timeoutMs,
          ...(env ? { env } : {}),
          onError: (err) => process.stderr.write(`pfc-train rank failed: ${err instanceof Error ? err.message : String(err)}\n`),
        }),
      ];
    }
    default:
      throw new PfcError('E_ARGUMENT', `launchTraining: option 'backend' must be 'threads', 'local', 'mpi' or 'nccl', got ${JSON.stringify(backend)}`);
  }
}

function pick(a: RankArgs): Partial<RankArgs> {
  const out: Partial<RankArgs> = {};
  for (const k of ['tensorBackend', 'verificationFiles', 'maxSteps', 'quiet', 'hangInCheckpointAt', 'progressTty'] as const) if (a[k] !== undefined) (out as Record<string, unknown>)[k] = a[k];
  return out;
}
