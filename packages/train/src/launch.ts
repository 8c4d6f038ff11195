import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import { runLocal, runThreads } from '@pfc/collective';
import * as collective from '@pfc/collective';
import type { Communicator } from '@pfc/collective';
import { trainThreadRank, type RankArgs } from './rank-entry';
import type { TrainResult } from './trainer';

/** How ranks are started: worker threads (one core each), in-thread tasks, or MPI processes (`mpirun`). */
export type LaunchBackend = 'threads' | 'local' | 'mpi';

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
 * `local` runs them as tasks of this thread (one engine, for tests); `mpi` uses `@pfc/collective`'s
 * `communicatorFromEnv` inside a process started by `mpirun`.
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
    case 'mpi': {
      const fromEnv = (collective as unknown as Record<string, unknown>).communicatorFromEnv;
      if (typeof fromEnv !== 'function') throw new PfcError('E_BACKEND_UNAVAILABLE', 'launchTraining: this @pfc/collective has no communicatorFromEnv (MPI)');
      const comm = (await (fromEnv as () => Promise<Communicator> | Communicator)()) as Communicator;
      try {
        return [await trainThreadRank(comm, rankArgs)];
      } finally {
        await comm.close();
      }
    }
    default:
      throw new PfcError('E_ARGUMENT', `launchTraining: option 'backend' must be 'threads', 'local' or 'mpi', got ${JSON.stringify(backend)}`);
  }
}

function pick(a: RankArgs): Partial<RankArgs> {
  const out: Partial<RankArgs> = {};
  for (const k of ['tensorBackend', 'verificationFiles', 'maxSteps', 'quiet', 'hangInCheckpointAt'] as const) if (a[k] !== undefined) (out as Record<string, unknown>)[k] = a[k];
  return out;
}
