/**
 * Typed arrays a collective operates on. `Uint16Array` always carries IEEE binary16 (fp16) values: reductions
 * decode, combine in float32 and round back.
 */
export type CollectiveArray = Float32Array | Float64Array | Int32Array | Uint16Array;

/** Reduction operators. */
export type ReduceOp = 'sum' | 'max';

/**
 * A group of `worldSize` ranks that exchange typed arrays. Every rank must call the same collectives in the same
 * order with compatible arguments; a mismatch, a rank that fails or a rank that stops answering makes the others
 * fail with a `PfcError` (`E_COLLECTIVE_MISMATCH`, `E_RANK_FAILED`, `E_COLLECTIVE_TIMEOUT`) instead of hanging.
 *
 * Implementations: `LocalCommunicator` (ranks as async tasks of one thread, for tests and single-process use),
 * `ThreadsCommunicator` (worker threads sharing memory), `MpiCommunicator` and `NcclCommunicator`.
 */
export interface Communicator {
  /** This rank, in [0, worldSize). */
  readonly rank: number;
  /** Number of ranks. */
  readonly worldSize: number;
  /** Implementation name (`local`, `threads`, `mpi`, `nccl`). */
  readonly backend: string;

  /**
   * Element-wise reduction across ranks, in place: on return `buf` holds the reduction on every rank.
   * All ranks pass arrays of the same type and length.
   */
  allReduce<T extends CollectiveArray>(buf: T, op?: ReduceOp): Promise<T>;

  /**
   * Concatenation of every rank's `buf` in rank order, returned as a new array on every rank.
   * Lengths may differ between ranks (the result's length is their sum).
   */
  allGather<T extends CollectiveArray>(buf: T): Promise<T>;

  /**
   * Reduces `buf` across ranks and returns this rank's slice of the result (a new array).
   * @param counts slice length per rank (sum = `buf.length`); default: `buf.length` split as evenly as possible,
   *   the first `buf.length % worldSize` ranks one element longer.
   */
  reduceScatter<T extends CollectiveArray>(buf: T, op?: ReduceOp, counts?: readonly number[]): Promise<T>;

  /** Copies `root`'s `buf` into every rank's `buf` (same type and length on every rank), in place. */
  broadcast<T extends CollectiveArray>(buf: T, root?: number): Promise<T>;

  /** Returns once every rank has called it. */
  barrier(): Promise<void>;

  /** Releases the communicator's resources. Further calls fail. */
  close(): Promise<void>;

  /**
   * Optional: marks the whole group failed because this rank cannot go on (`reason`), so that the other ranks'
   * collectives fail promptly with `E_RANK_FAILED` instead of waiting for a timeout (MPI: `MPI_Abort`, which ends
   * the job). Call it from a rank's error handler before giving up.
   */
  abort?(reason?: unknown): void;
}

/** Default slice lengths of {@link Communicator.reduceScatter}: `n` split as evenly as possible over `worldSize`. */
export function evenCounts(n: number, worldSize: number): number[] {
  const base = Math.floor(n / worldSize);
  const rem = n % worldSize;
  return Array.from({ length: worldSize }, (_, r) => base + (r < rem ? 1 : 0));
}
