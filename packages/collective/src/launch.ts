import { resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { PfcError, workerScript } from '@pfc/core';
import { allocateThreadsGroup, failedRank, markGroupFailed, type ThreadsWaitMode } from './threads';
import type { SerializedError } from './threads-worker';

/** Options of {@link runThreads}. */
export interface RunThreadsOptions<A = unknown> {
  /**
   * The module whose exported function each rank runs: an absolute path, a path relative to the working directory,
   * or a `file:` URL. `.ts` modules are loaded through tsx (tests, sources).
   */
  module: string;
  /** Name of the exported function, called as `fn(comm, args)` on every rank (default `'default'`). */
  export?: string;
  /** Argument passed to every rank (structured-cloned; SharedArrayBuffers inside are shared, not copied). */
  args?: A;
  /** Milliseconds a rank waits in one collective before `E_COLLECTIVE_TIMEOUT`; also the grace period given to the
   * other ranks after a failure before the launcher terminates them (default 60000). */
  timeoutMs?: number;
  /** Bytes per rank slot of the shared arena (default 4 MiB); larger messages go through in chunks. */
  slotBytes?: number;
  /** How ranks wait at sync points (default `'async'`: the rank's event loop keeps running). */
  wait?: ThreadsWaitMode;
  /** Per-worker V8 limits (e.g. `{ maxOldGenerationSizeMb }`). */
  resourceLimits?: ConstructorParameters<typeof Worker>[1] extends infer O ? (O extends { resourceLimits?: infer R } ? R : never) : never;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: Error };

function rebuild(e: SerializedError, rank: number): Error {
  if (e.code && e.code.startsWith('E_')) {
    const err = new PfcError(e.code as `E_${string}`, e.message, { details: { ...(e.details ?? {}), rank } });
    if (e.stack) err.stack = e.stack;
    return err;
  }
  const cause = new Error(e.message);
  cause.name = e.name;
  if (e.stack) cause.stack = e.stack;
  return new PfcError('E_RANK_FAILED', `rank ${rank} failed: ${e.name}: ${e.message}`, { cause, details: { rank, reason: 'threw' } });
}

/**
 * Runs the exported function `fn(comm, args)` of `options.module` on `worldSize` worker-thread ranks that share a
 * {@link ThreadsCommunicator} group, and returns their results in rank order (structured-cloned).
 *
 * If a rank throws, exits (`process.exit` in the worker) or dies of an uncaught error, the group is marked failed:
 * the other ranks' pending and future collectives reject with `E_RANK_FAILED` naming that rank, every worker is
 * terminated (after at most `timeoutMs` of grace), and the promise rejects with the first rank's error (a `PfcError`
 * keeps its code and gains `details.rank`; any other error becomes `E_RANK_FAILED` with it as `cause`).
 *
 * @example
 * // ranks.ts: export async function sum(comm: Communicator) { return [...(await comm.allReduce(new Float32Array([comm.rank])))]; }
 * const out = await runThreads<number[]>(3, { module: require.resolve('./ranks'), export: 'sum' }); // [[3], [3], [3]]
 */
export async function runThreads<R = unknown, A = unknown>(worldSize: number, options: RunThreadsOptions<A>): Promise<R[]> {
  if (!options || typeof options.module !== 'string' || options.module.length === 0) {
    throw new PfcError('E_ARGUMENT', `runThreads: argument 'options.module' must be a module path, got ${JSON.stringify(options?.module)}`);
  }
  const timeoutMs = options.timeoutMs ?? 60_000;
  const memory = allocateThreadsGroup(worldSize, { slotBytes: options.slotBytes, timeoutMs, wait: options.wait });
  const file = options.module.startsWith('file:') ? fileURLToPath(options.module) : resolvePath(options.module);
  const ws = workerScript(__filename, __dirname, 'threads-worker');
  const outcomes: (Outcome | undefined)[] = new Array(worldSize).fill(undefined);
  const workers: Worker[] = [];

  return new Promise<R[]>((resolve, reject) => {
    let grace: NodeJS.Timeout | null = null;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      if (grace) clearTimeout(grace);
      for (const w of workers) void w.terminate();
      const culprit = failedRank(memory.control);
      const firstErr = outcomes.findIndex((o) => o && !o.ok);
      if (firstErr < 0) {
        resolve(outcomes.map((o) => (o as { value: R }).value));
        return;
      }
      // Report the original failure, not the errors other ranks saw as its consequence.
      const original = (o: Outcome | undefined): boolean => !!o && !o.ok && (o.error as PfcError).details?.observedBy === undefined;
      const pick = original(outcomes[culprit]) ? culprit : outcomes.findIndex(original);
      reject((outcomes[pick >= 0 ? pick : firstErr] as { error: Error }).error);
    };
    const settle = (rank: number, o: Outcome): void => {
      if (outcomes[rank]) return;
      outcomes[rank] = o;
      if (!o.ok) {
        markGroupFailed(memory.control, rank, 'died');
        // Ranks blocked outside collectives (a long computation) get the collective timeout to notice.
        grace ??= setTimeout(() => {
          outcomes.forEach((x, r) => {
            if (!x) {
              const error = new PfcError('E_RANK_FAILED', `rank ${r} was terminated after rank ${rank} failed`, { details: { rank: r, reason: 'terminated', observedBy: r } });
              outcomes[r] = { ok: false, error };
            }
          });
          finish();
        }, timeoutMs + 1000);
      }
      if (outcomes.every((x) => x)) finish();
    };
    for (let rank = 0; rank < worldSize; rank++) {
      const w = new Worker(ws.entry, {
        eval: ws.eval,
        execArgv: ws.execArgv,
        workerData: { memory, rank, module: file, exportName: options.export ?? 'default', args: options.args },
        resourceLimits: options.resourceLimits,
      });
      workers.push(w);
      w.on('message', (m: { type: 'result'; value: unknown } | { type: 'error'; error: SerializedError }) => {
        if (m.type === 'result') settle(rank, { ok: true, value: m.value });
        else settle(rank, { ok: false, error: rebuild(m.error, rank) });
      });
      w.on('error', (err) => {
        settle(rank, {
          ok: false,
          error: new PfcError('E_RANK_FAILED', `rank ${rank} died of an uncaught error: ${err.message}`, { cause: err, details: { rank, reason: 'died' } }),
        });
      });
      w.on('exit', (code) => {
        // Let a result posted just before the exit arrive first.
        setTimeout(() => settle(rank, {
          ok: false,
          error: new PfcError('E_RANK_FAILED', `rank ${rank} exited with code ${code} before returning a result`, { details: { rank, reason: 'died', exitCode: code } }),
        }), 20);
      });
    }
  });
}
