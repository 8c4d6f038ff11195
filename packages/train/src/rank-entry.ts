import { existsSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { initBackend, type BackendName } from '@pfc/core';
import type { Communicator } from '@pfc/collective';
import type { TrainConfig } from './config';
import { trainRank, type TrainResult } from './trainer';
import { loadVerificationSet } from './verification';

/** The structured-clone-safe arguments every rank of a launched run receives. */
export interface RankArgs {
  config: TrainConfig;
  /** Tensor backend each rank initialises (default: the best available). */
  tensorBackend?: BackendName;
  /** Verification `.bin` files (default: `<rec>/<name>.bin` for each existing `val_targets` entry). */
  verificationFiles?: string[];
  maxSteps?: number;
  /** Silence rank 0's log lines. */
  quiet?: boolean;
  /** Testing hook (the CLI's `PFC_TRAIN_HANG_IN_CHECKPOINT`): block inside the write of the checkpoint of this step. */
  hangInCheckpointAt?: number;
  /**
   * Draw rank 0's progress bar as on a terminal `columns` wide. `launchTraining` sets it for worker-thread ranks when
   * the launching process's stderr is a TTY: a worker's own stderr is a pipe to the main thread (never a TTY), though
   * what it writes ends up on that terminal.
   */
  progressTty?: { columns?: number };
}

/**
 * A writable that forwards to `sink` and reports itself as a TTY `columns` wide, so a progress bar drawn in a worker
 * thread (whose stderr is a pipe to the main thread) redraws on the main thread's terminal.
 */
export function ttyStream(sink: NodeJS.WritableStream, columns?: number): Writable & { isTTY: true; columns?: number } {
  const w = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      sink.write(chunk, (err) => callback(err ?? null));
    },
  });
  return Object.assign(w, { isTTY: true as const, ...(columns !== undefined ? { columns } : {}) });
}

/** The `.bin` files a config names that exist: `<rec>/<name>.bin` for each `val_targets` entry. */
export function verificationFilesOf(cfg: TrainConfig): string[] {
  return cfg.val_targets.map((n) => join(cfg.rec, `${n}.bin`)).filter((f) => existsSync(f));
}

/**
 * One rank of a launched run (worker thread, MPI process or in-thread task): initialises the tensor backend, loads
 * the verification sets on rank 0 and calls {@link trainRank}. `runThreads` calls it as `trainThreadRank(comm, args)`.
 */
export async function trainThreadRank(comm: Communicator, args: RankArgs): Promise<TrainResult> {
  await initBackend({ ...(args.tensorBackend ? { backend: args.tensorBackend } : {}), log: comm.rank === 0 && !args.quiet ? undefined : null });
  const cfg = args.config;
  const files = args.verificationFiles ?? verificationFilesOf(cfg);
  const verification = comm.rank === 0 ? await Promise.all(files.map((f) => loadVerificationSet(f, cfg.image_size))) : [];
  const hangAt = args.hangInCheckpointAt;
  const tty = comm.rank === 0 && args.progressTty ? ttyStream(process.stderr, args.progressTty.columns) : null;
  try {
    return await trainRank(comm, {
      config: cfg,
      verification,
      ...(args.maxSteps !== undefined ? { maxSteps: args.maxSteps } : {}),
      ...(args.quiet ? { log: null } : {}),
      ...(comm.rank === 0 ? { progressStream: tty ?? process.stderr } : {}),
      ...(hangAt !== undefined
        ? {
            onCheckpointWritten: ({ globalStep, rank }: { globalStep: number; rank: number }) => {
              if (globalStep !== hangAt || rank !== 0) return;
              // Synchronous: the thread blocks next, so an asynchronous pipe write would never be flushed.
              writeSync(1, `hanging inside the checkpoint write of step ${globalStep}\n`);
              Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 600_000);
            },
          }
        : {}),
    });
  } finally {
    // The launcher terminates a worker as soon as every rank has returned; wait until the main thread has the bar's
    // last frame and the escape codes that show the cursor again, or the terminal is left without a cursor.
    if (tty) await new Promise<void>((resolve) => tty.end(() => resolve()));
  }
}
