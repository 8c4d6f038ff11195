import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import { runLocal, runRank, runThreads } from '@pfc/collective';
import { trainThreadRank, type RankArgs } from './rank-entry';
import type { TrainResult } from './trainer';

/**
 * How ranks are started: worker threads (one core each), in-thread tasks, or one rank per process started by
 * `mpirun` (`mpi`: MPI collectives; `nccl`: NCCL collectives bootstrapped over MPI).
 */
export type LaunchBackend = 'threads' | 'local' | 'mpi' | 'nccl';

/** Options of {@link launchTraining}. */
export interface LaunchOptions extends Omit<RankArgs, 'config'> {
  /** Number of ranks (threads/local; MPI takes its size from `mpirun`). Default 1. */
  worldSize?: number;
  /** Default `threads`. */
  backend?: LaunchBackend;
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
  const { worldSize = 1, backend = 'threads', timeoutMs = 30 * 60_000, ...rest } = options;
  const rankArgs: RankArgs = { ...rest, config: args.config, ...pick(args) };
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new PfcError('E_WORLD_SIZE', `launchTraining: option 'worldSize' must be a positive integer, got ${worldSize}`);
  }
  switch (backend) {
    case 'local':
      return runLocal(worldSize, (comm) => trainThreadRank(comm, rankArgs), { timeoutMs });
    case 'threads':
      return runThreads<TrainResult, RankArgs>(worldSize, { module: entryModule(), export: 'trainThreadRank', args: rankArgs, timeoutMs });
    case 'mpi':
    case 'nccl':
      // One rank per process; a failing rank aborts the whole job instead of leaving the others waiting.
      return [
        await runRank((comm) => trainThreadRank(comm, rankArgs), {
          backend,
          timeoutMs,
          onError: (err) => process.stderr.write(`pfc-train rank failed: ${err instanceof Error ? err.message : String(err)}\n`),
        }),
      ];
    default:
      throw new PfcError('E_ARGUMENT', `launchTraining: option 'backend' must be 'threads', 'local', 'mpi' or 'nccl', got ${JSON.stringify(backend)}`);
  }
}

function pick(a: RankArgs): Partial<RankArgs> {
  const out: Partial<RankArgs> = {};
  for (const k of ['tensorBackend', 'verificationFiles', 'maxSteps', 'quiet', 'hangInCheckpointAt'] as const) if (a[k] !== undefined) (out as Record<string, unknown>)[k] = a[k];
  return out;
}
