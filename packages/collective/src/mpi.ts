import { PfcError } from '@pfc/core';
import { evenCounts, type CollectiveArray, type Communicator, type ReduceOp } from './communicator';
import { MPI_INSTALL_HINT, dtypeCode, loadAddon } from './native';
import { reduceInto } from './reduce';

/** The MPI binding (native/mpi.cc). Collectives run on the libuv thread pool and resolve when MPI returns. */
interface MpiAddon {
  init(): { rank: number; size: number; threadLevel: number; threadMultiple: boolean; version: string; library: string };
  finalize(): void;
  abort(code: number): void;
  allReduce(buf: CollectiveArray, dtype: number, op: number): Promise<void>;
  allGatherV(send: CollectiveArray, recv: CollectiveArray, dtype: number, counts: number[]): Promise<void>;
  reduceScatter(send: CollectiveArray, recv: CollectiveArray, dtype: number, op: number, counts: number[]): Promise<void>;
  bcast(buf: CollectiveArray, dtype: number, root: number): Promise<void>;
  barrier(): Promise<void>;
}

/** Options of {@link MpiCommunicator.world}. */
export interface MpiOptions {
  /**
   * Milliseconds one collective may take before it rejects with `E_COLLECTIVE_TIMEOUT` (default 300000). MPI has
   * no way to cancel a collective: after a timeout the group is unusable; call `abort()` to end the MPI job.
   */
  timeoutMs?: number;
  /**
   * Check before every collective that all ranks called the same operation with compatible arguments
   * (`E_COLLECTIVE_MISMATCH`), at the cost of one 16-byte allgather per call (default true). Without the check a
   * mismatch is undefined behaviour in MPI (a hang, a truncation error or wrong data).
   */
  verify?: boolean;
}

const KINDS = ['barrier', 'allReduce', 'allGather', 'reduceScatter', 'broadcast'] as const;
const DTYPES = ['float32', 'float64', 'int32', 'float16'] as const;

interface MpiWorld {
  addon: MpiAddon;
  info: ReturnType<MpiAddon['init']>;
  finalized: boolean;
  comm: MpiCommunicator | null;
}

// MPI can be initialised once per process, so the world is one per process by nature.
let world: MpiWorld | null = null;

/** Whether this process was started by an MPI launcher (OpenMPI `mpirun`, or a PMI/PMIx launcher such as srun). */
export function launchedByMpi(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!(env.OMPI_COMM_WORLD_SIZE || env.PMI_SIZE || env.PMIX_RANK);
}

/**
 * The ranks of the MPI world (`MPI_COMM_WORLD`) through a Node-API binding over the system's MPI. Collectives work
 * on the typed arrays' memory directly (in place where MPI allows, no staging copies) and run on the libuv thread
 * pool, so the event loop stays responsive while MPI waits.
 *
 * Numerics: int32, float64 and 2-rank float32 results equal the local and threads backends bit for bit; with 3+
 * ranks MPI rounds float32 sums pairwise (order chosen by MPI), within 1 ulp per rank of theirs. fp16 (Uint16Array)
 * is gathered and reduced in float32 in rank order exactly as the other backends do (MPI has no fp16 type). `max`
 * propagates NaN (a user-defined op: OpenMPI's MPI_MAX drops NaN).
 */
export class MpiCommunicator implements Communicator {
  readonly backend = 'mpi';
  readonly rank: number;
  readonly worldSize: number;
  /** What MPI reported at init: thread level, MPI version, library version string. */
  readonly info: Readonly<ReturnType<MpiAddon['init']>>;
  private readonly addon: MpiAddon;
  private readonly timeoutMs: number;
  private readonly verify: boolean;
  private failure: PfcError | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private pending = 0;

  private constructor(w: MpiWorld, options: MpiOptions) {
    this.addon = w.addon;
    this.info = w.info;
    this.rank = w.info.rank;
    this.worldSize = w.info.size;
    this.timeoutMs = options.timeoutMs ?? 300_000;
    this.verify = options.verify ?? true;
  }

  /**
   * Initialises MPI (`MPI_Init_thread`, requesting `MPI_THREAD_MULTIPLE`) on first use and returns the world's
   * communicator; later calls return the same one. Throws `E_BACKEND_UNAVAILABLE` with the install hint when the
   * binding is not built, and `E_MPI` when MPI fails to initialise.
   */
  static world(options: MpiOptions = {}): MpiCommunicator {
    if (world?.finalized) throw new PfcError('E_COLLECTIVE_CLOSED', 'mpi: MPI was finalized in this process and cannot be initialised again');
    if (!world) {
      const addon = loadAddon<MpiAddon>('pfc_mpi', 'mpi', MPI_INSTALL_HINT);
      let info: ReturnType<MpiAddon['init']>;
      try {
        info = addon.init();
      } catch (cause) {
        throw new PfcError('E_MPI', `mpi: ${(cause as Error).message}`, { cause });
      }
      world = { addon, info, finalized: false, comm: null };
      const w = world;
      // A rank that ends without close() would make mpirun report an error; finalize if nothing is in flight.
      process.once('exit', () => {
        if (!w.finalized && w.comm && w.comm.pending === 0 && !w.comm.failure) {
          w.finalized = true;
          w.addon.finalize();
        }
      });
    }
    world.comm ??= new MpiCommunicator(world, options);
    return world.comm;
  }

  /** Ends the whole MPI job now (`MPI_Abort`): use it when this rank cannot go on, so that no rank waits forever. */
  abort(_reason?: unknown): void {
    this.addon.abort(1);
  }

  async allReduce<T extends CollectiveArray>(buf: T, op: ReduceOp = 'sum'): Promise<T> {
    const code = dtypeCode(buf);
    checkOp('allReduce', op);
    return this.enqueue('allReduce', buf, buf.length, op === 'sum' ? 0 : 1, async () => {
      if (code === 3) {
        const all = await this.gather(buf, evenCounts(buf.length * this.worldSize, this.worldSize));
        reduceInto(buf, this.split(all, buf.length), op);
      } else await this.addon.allReduce(buf, code, op === 'sum' ? 0 : 1);
      return buf;
    });
  }

  async allGather<T extends CollectiveArray>(buf: T): Promise<T> {
    dtypeCode(buf);
    return this.enqueue('allGather', buf, -1, 0, async (lengths) => this.gather(buf, lengths ?? (await this.lengths(buf))));
  }

  async reduceScatter<T extends CollectiveArray>(buf: T, op: ReduceOp = 'sum', counts?: readonly number[]): Promise<T> {
    const code = dtypeCode(buf);
    checkOp('reduceScatter', op);
    if (counts && (counts.length !== this.worldSize || counts.some((c) => !Number.isInteger(c) || c < 0) || counts.reduce((a, b) => a + b, 0) !== buf.length)) {
      throw new PfcError(
        'E_ARGUMENT',
        `reduceScatter: argument 'counts' must have ${this.worldSize} non-negative integers summing to ${buf.length}, got [${counts.join(', ')}]`,
      );
    }
    const cs = counts ? [...counts] : evenCounts(buf.length, this.worldSize);
    const ctor = buf.constructor as new (n: number) => T;
    const out = new ctor(cs[this.rank]!);
    return this.enqueue('reduceScatter', buf, buf.length, (op === 'sum' ? 0 : 1) + 2 * hashCounts(cs), async () => {
      if (code === 3) {
        const all = await this.gather(buf, evenCounts(buf.length * this.worldSize, this.worldSize));
        const start = cs.slice(0, this.rank).reduce((a, b) => a + b, 0);
        reduceInto(out, this.split(all, buf.length), op, start, out.length);
      } else await this.addon.reduceScatter(buf, out, code, op === 'sum' ? 0 : 1, cs);
      return out;
    });
  }

  async broadcast<T extends CollectiveArray>(buf: T, root = 0): Promise<T> {
    const code = dtypeCode(buf);
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw new PfcError('E_ARGUMENT', `broadcast: argument 'root' must be an integer in [0, ${this.worldSize}), got ${root}`);
    }
    return this.enqueue('broadcast', buf, buf.length, root, async () => {
      await this.addon.bcast(buf, code, root);
      return buf;
    });
  }

  async barrier(): Promise<void> {
    await this.enqueue('barrier', null, 0, 0, async () => {
      await this.addon.barrier();
    });
  }

  /**
   * Finalizes MPI (`MPI_Finalize`, collective: every rank must close). The process cannot use MPI afterwards.
   * `MPI_Finalize` waits for every rank, so close first runs a checked barrier: when another rank is still inside
   * a different collective (this rank is closing because of an error) the barrier fails with
   * `E_COLLECTIVE_MISMATCH` on every rank, and close skips `MPI_Finalize` instead of waiting forever; the process
   * then exits and mpirun ends the job. After a failed collective close never finalizes. Never throws.
   */
  async close(): Promise<void> {
    await this.queue;
    if (!this.failure && world && !world.finalized) {
      try {
        await this.barrier();
      } catch {
        // this.failure is set: fall through without finalizing.
      }
      if (!this.failure && !world.finalized) {
        world.finalized = true;
        this.addon.finalize();
      }
    }
    this.failure ??= new PfcError('E_COLLECTIVE_CLOSED', `mpi: communicator of rank ${this.rank} is closed`);
  }

  // ---- internals ----------------------------------------------------------------------------------------------

  private split<T extends CollectiveArray>(all: T, n: number): T[] {
    return Array.from({ length: this.worldSize }, (_, r) => all.subarray(r * n, (r + 1) * n) as T);
  }

  private async lengths(buf: CollectiveArray): Promise<number[]> {
    const counts = new Int32Array(this.worldSize);
    counts[this.rank] = buf.length;
    await this.addon.allReduce(counts, 2, 0);
    return [...counts];
  }

  private async gather<T extends CollectiveArray>(buf: T, counts: number[]): Promise<T> {
    const out = new (buf.constructor as new (n: number) => T)(counts.reduce((a, b) => a + b, 0));
    await this.addon.allGatherV(buf, out, dtypeCode(buf), counts);
    return out;
  }

  /** Checks that every rank called the same collective; returns every rank's length (allGather uses them). */
  private async check(kind: (typeof KINDS)[number], buf: CollectiveArray | null, length: number, arg: number): Promise<number[]> {
    const mine = Int32Array.of(KINDS.indexOf(kind), buf ? dtypeCode(buf) : -1, length === -1 ? buf!.length : length, arg | 0);
    const all = new Int32Array(4 * this.worldSize);
    await this.addon.allGatherV(mine, all, 2, new Array(this.worldSize).fill(4));
    for (let r = 1; r < this.worldSize; r++) {
      const d = (i: number, q: number): number => all[4 * q + i]!;
      const why =
        d(0, r) !== d(0, 0)
          ? `rank 0 called ${KINDS[d(0, 0)]} but rank ${r} called ${KINDS[d(0, r)]}`
          : d(1, r) !== d(1, 0)
            ? `rank 0 passed ${DTYPES[d(1, 0)]} but rank ${r} passed ${DTYPES[d(1, r)]}`
            : length !== -1 && d(2, r) !== d(2, 0)
              ? `rank 0 passed ${d(2, 0)} elements but rank ${r} passed ${d(2, r)}`
              : d(3, r) !== d(3, 0)
                ? `ranks 0 and ${r} disagree on the operator, root or counts`
                : null;
      if (why) throw new PfcError('E_COLLECTIVE_MISMATCH', `mpi ${kind}: ${why}`, { details: { op: kind, rank: this.rank } });
    }
    return Array.from({ length: this.worldSize }, (_, r) => all[4 * r + 2]!);
  }

  private enqueue<R>(kind: (typeof KINDS)[number], buf: CollectiveArray | null, length: number, arg: number, fn: (lengths: number[] | null) => Promise<R>): Promise<R> {
    const run = async (): Promise<R> => {
      if (this.failure) throw this.failure;
      this.pending++;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(
            new PfcError(
              'E_COLLECTIVE_TIMEOUT',
              `mpi ${kind}: rank ${this.rank} waited ${this.timeoutMs} ms; another rank died or stopped calling collectives. MPI cannot cancel a collective: call abort() to end the job`,
              { details: { op: kind, rank: this.rank } },
            ),
          );
        }, this.timeoutMs);
      });
      try {
        const work = (async () => fn(this.verify ? await this.check(kind, buf, length, arg) : null))();
        return await Promise.race([work, timeout]);
      } catch (err) {
        const e =
          err instanceof PfcError ? err : new PfcError('E_MPI', `mpi ${kind}: ${(err as Error).message}`, { cause: err, details: { op: kind, rank: this.rank } });
        this.failure ??= e;
        throw e;
      } finally {
        clearTimeout(timer);
        this.pending--;
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }
}

function checkOp(fn: string, op: string): void {
  if (op !== 'sum' && op !== 'max') throw new PfcError('E_ARGUMENT', `${fn}: argument 'op' must be 'sum' or 'max', got ${JSON.stringify(op)}`);
}

function hashCounts(counts: readonly number[]): number {
  let h = 17;
  for (const c of counts) h = (Math.imul(h, 31) + c) | 0;
  return h & 0x3fffffff;
}
