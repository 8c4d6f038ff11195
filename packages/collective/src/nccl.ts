import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { PfcError } from '@pfc/core';
import { evenCounts, type CollectiveArray, type Communicator, type ReduceOp } from './communicator';
import { dtypeCode, loadAddon } from './native';

/**
 * The NCCL binding (native/nccl.cc): loads libnccl.so.2 and libcudart with dlopen on first use. Internal: exported
 * only so that tests can hand {@link createNcclCommunicator} a fake with the same interface.
 */
export interface NcclAddon {
  available(): { ok: boolean; error?: string; ncclVersion?: number; devices?: number };
  /** A fresh 128-byte `ncclUniqueId`. */
  uniqueId(): Uint8Array;
  /** `ncclCommInitRank` on `device` (blocking and collective: returns once every rank has called it). */
  initRank(id: Uint8Array, nranks: number, rank: number, device: number): object;
  destroy(handle: object): void;
  /**
   * One collective of `kind` ({@link NCCL_KIND}) staged through device memory: `a` is copied host→device, NCCL runs,
   * the result is copied device→host into `a` (allReduce, broadcast) or `b` (allGather, reduceScatter).
   * `dtype`: the {@link dtypeCode} of `a`; `op`: an `ncclRedOp_t`.
   */
  collective(kind: number, handle: object, a: CollectiveArray, b: CollectiveArray | null, dtype: number, op: number, root: number): Promise<void>;
}

export const NCCL_INSTALL_HINT =
  'the NCCL backend needs an NVIDIA GPU with the CUDA runtime (libcudart) and NCCL (libnccl.so.2, e.g. Debian/Ubuntu `libnccl2`) on the library path';

/** Collective kinds of the binding's `collective()` (native/nccl.cc `NcclWorker::Kind`). */
export const NCCL_KIND = { allReduce: 0, allGather: 1, reduceScatter: 2, broadcast: 3 } as const;
/** `ncclRedOp_t` values the binding passes through to NCCL. */
export const NCCL_OP = { sum: 0, max: 2 } as const;

/** How ranks agree on NCCL's unique id: through a bootstrap communicator (e.g. MPI) or a shared file. */
export type NcclBootstrap = { communicator: Communicator } | { file: string; rank: number; worldSize: number; timeoutMs?: number };

/** Options of {@link NcclCommunicator.create}. */
export interface NcclOptions {
  bootstrap: NcclBootstrap;
  /** CUDA device of this rank (default 0; one process per GPU: the node-local rank). */
  device?: number;
  /**
   * Milliseconds one collective may take before it rejects with `E_COLLECTIVE_TIMEOUT` (default 300000). A stuck
   * NCCL call cannot be cancelled: after a timeout the communicator is unusable; call `abort()` to end the job.
   */
  timeoutMs?: number;
}

/** What to do when the binding itself is missing (it builds without CUDA, so only node-gyp is needed). */
export const NCCL_BINDING_HINT = `build the binding with \`npm run build:native -w @pfc/collective\`; ${NCCL_INSTALL_HINT}`;

function loadNcclAddon(): NcclAddon {
  return loadAddon<NcclAddon>('pfc_nccl', 'nccl', NCCL_BINDING_HINT);
}

/** What the NCCL binding finds on this machine: `{ ok: false, error }` names the missing library. */
export function ncclAvailability(): { ok: boolean; error?: string; ncclVersion?: number; devices?: number } {
  try {
    return loadNcclAddon().available();
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

function checkOp(fn: string, op: string): void {
  if (op !== 'sum' && op !== 'max') throw new PfcError('E_ARGUMENT', `${fn}: argument 'op' must be 'sum' or 'max', got ${JSON.stringify(op)}`);
}

interface NcclState {
  addon: NcclAddon;
  handle: object;
  rank: number;
  worldSize: number;
  device: number;
  timeoutMs: number;
  bootstrap: Communicator | null;
}

// Set by NcclCommunicator's static block: createNcclCommunicator builds instances without a public constructor.
let makeCommunicator: (state: NcclState) => NcclCommunicator;

/**
 * {@link NcclCommunicator.create} over a given binding. Internal (not exported from the package): the tests pass a
 * fake binding so that the bootstrap, staging and error paths run on machines without a GPU.
 */
export async function createNcclCommunicator(addon: NcclAddon, options: NcclOptions): Promise<NcclCommunicator> {
  const avail = addon.available();
  if (!avail.ok || !avail.devices) {
    throw new PfcError('E_BACKEND_UNAVAILABLE', `nccl backend unavailable: ${avail.error ?? 'no CUDA device is visible'}; ${NCCL_INSTALL_HINT}`, {
      details: { backend: 'nccl', ...avail },
    });
  }
  const b = options.bootstrap;
  const rank = 'communicator' in b ? b.communicator.rank : b.rank;
  const worldSize = 'communicator' in b ? b.communicator.worldSize : b.worldSize;
  if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new PfcError('E_WORLD_SIZE', `nccl bootstrap: rank must be an integer in [0, worldSize) and worldSize a positive integer, got rank ${rank}, worldSize ${worldSize}`);
  }
  const device = options.device ?? 0;
  if (!Number.isInteger(device) || device < 0 || device >= avail.devices) {
    throw new PfcError('E_ARGUMENT', `nccl: argument 'device' must be an integer in [0, ${avail.devices}) (visible CUDA devices), got ${device}`);
  }
  const newId = (): Uint8Array => {
    let id: Uint8Array;
    try {
      id = addon.uniqueId();
    } catch (cause) {
      throw new PfcError('E_NCCL', `nccl: rank 0: ${(cause as Error).message}`, { cause });
    }
    if (id.length !== 128) throw new PfcError('E_NCCL', `nccl: ncclGetUniqueId gave ${id.length} bytes, expected 128`);
    return id;
  };
  let id: Uint8Array;
  if ('communicator' in b) {
    // Int32 words: every backend (MPI included) broadcasts int32 bit-exactly.
    const words = new Int32Array(32);
    if (rank === 0) new Uint8Array(words.buffer).set(newId());
    await b.communicator.broadcast(words, 0);
    id = new Uint8Array(words.buffer);
  } else {
    const timeoutMs = b.timeoutMs ?? 60_000;
    if (rank === 0) {
      // A file left by an earlier job would hand the other ranks a stale id: ncclCommInitRank would then wait forever.
      if (existsSync(b.file)) {
        throw new PfcError('E_ARGUMENT', `nccl bootstrap: ${b.file} already exists (left by an earlier job?); rank 0 writes a fresh id there: remove it or use a new path per job`);
      }
      const tmp = `${b.file}.tmp-${process.pid}`;
      writeFileSync(tmp, newId());
      renameSync(tmp, b.file);
    }
    const deadline = Date.now() + timeoutMs;
    while (!existsSync(b.file)) {
      if (Date.now() > deadline) throw new PfcError('E_COLLECTIVE_TIMEOUT', `nccl bootstrap: ${b.file} did not appear within ${timeoutMs} ms (rank 0 writes it)`);
      await sleep(20);
    }
    id = new Uint8Array(readFileSync(b.file));
    if (id.length !== 128) throw new PfcError('E_NCCL', `nccl bootstrap: ${b.file} holds ${id.length} bytes, expected a 128-byte ncclUniqueId`);
  }
  let handle: object;
  try {
    handle = addon.initRank(id, worldSize, rank, device);
  } catch (cause) {
    throw new PfcError('E_NCCL', `nccl: rank ${rank} on device ${device}: ${(cause as Error).message}`, { cause });
  }
  // ncclCommInitRank returned on every rank, so every rank has read the id: the file is no longer needed.
  if (!('communicator' in b) && rank === 0) rmSync(b.file, { force: true });
  return makeCommunicator({
    addon,
    handle,
    rank,
    worldSize,
    device,
    timeoutMs: options.timeoutMs ?? 300_000,
    bootstrap: 'communicator' in b ? b.communicator : null,
  });
}

/**
 * Ranks on GPUs through NCCL. tfjs exposes no device pointers, so each collective stages the host typed array
 * through a device buffer (host→device copy, NCCL call, device→host copy) on the libuv thread pool.
 *
 * Numerics differ from the other backends where NCCL decides: fp16 sums are rounded at every step of NCCL's ring,
 * float32 sums follow NCCL's order, and `max` does not promise NaN propagation. Uneven allGather lengths and
 * reduceScatter counts are padded to the largest one (NCCL needs equal counts).
 */
export class NcclCommunicator implements Communicator {
  readonly backend = 'nccl';
  readonly rank: number;
  readonly worldSize: number;
  /** CUDA device of this rank. */
  readonly device: number;
  private readonly addon: NcclAddon;
  private readonly handle: object;
  private readonly timeoutMs: number;
  private readonly bootstrapComm: Communicator | null;
  private failure: PfcError | null = null;
  /** A collective timed out with its NCCL call still running: the communicator must not be destroyed under it. */
  private stuck = false;
  private queue: Promise<unknown> = Promise.resolve();

  static {
    makeCommunicator = (state) => new NcclCommunicator(state);
  }

  private constructor(s: NcclState) {
    this.addon = s.addon;
    this.handle = s.handle;
    this.rank = s.rank;
    this.worldSize = s.worldSize;
    this.device = s.device;
    this.timeoutMs = s.timeoutMs;
    this.bootstrapComm = s.bootstrap;
  }

  /** Ends the job through the bootstrap communicator (MPI: `MPI_Abort`); a no-op with the file bootstrap. */
  abort(reason?: unknown): void {
    this.bootstrapComm?.abort?.(reason);
  }

  /**
   * Creates this rank's NCCL communicator: rank 0 makes the unique id, the bootstrap hands it to every rank, then
   * every rank calls `ncclCommInitRank` (collective, blocking: it has no timeout). Throws `E_BACKEND_UNAVAILABLE`
   * naming the missing library when NCCL or the CUDA runtime cannot be loaded or no GPU is visible, `E_NCCL` when
   * NCCL fails, `E_COLLECTIVE_TIMEOUT` when the file bootstrap's id does not appear in time.
   */
  static async create(options: NcclOptions): Promise<NcclCommunicator> {
    return createNcclCommunicator(loadNcclAddon(), options);
  }

  async allReduce<T extends CollectiveArray>(buf: T, op: ReduceOp = 'sum'): Promise<T> {
    const code = dtypeCode(buf);
    checkOp('allReduce', op);
    return this.enqueue('allReduce', async () => {
      await this.addon.collective(NCCL_KIND.allReduce, this.handle, buf, null, code, NCCL_OP[op], 0);
      return buf;
    });
  }

  async allGather<T extends CollectiveArray>(buf: T): Promise<T> {
    const code = dtypeCode(buf);
    return this.enqueue('allGather', async () => {
      const lengths = new Int32Array(this.worldSize);
      await this.addon.collective(NCCL_KIND.allGather, this.handle, Int32Array.of(buf.length), lengths, 2, 0, 0);
      const max = Math.max(...lengths);
      const ctor = buf.constructor as new (n: number) => T;
      const send = buf.length === max ? buf : new ctor(max);
      if (send !== buf) send.set(buf as never);
      const recv = new ctor(max * this.worldSize);
      await this.addon.collective(NCCL_KIND.allGather, this.handle, send, recv, code, 0, 0);
      const out = new ctor(lengths.reduce((a, b) => a + b, 0));
      let off = 0;
      lengths.forEach((n, r) => {
        out.set(recv.subarray(r * max, r * max + n) as never, off);
        off += n;
      });
      return out;
    });
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
    return this.enqueue('reduceScatter', async () => {
      const max = Math.max(...cs);
      const ctor = buf.constructor as new (n: number) => T;
      const padded = new ctor(max * this.worldSize);
      let off = 0;
      cs.forEach((n, r) => {
        padded.set(buf.subarray(off, off + n) as never, r * max);
        off += n;
      });
      const recv = new ctor(max);
      await this.addon.collective(NCCL_KIND.reduceScatter, this.handle, padded, recv, code, NCCL_OP[op], 0);
      return recv.slice(0, cs[this.rank]) as T;
    });
  }

  async broadcast<T extends CollectiveArray>(buf: T, root = 0): Promise<T> {
    const code = dtypeCode(buf);
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw new PfcError('E_ARGUMENT', `broadcast: argument 'root' must be an integer in [0, ${this.worldSize}), got ${root}`);
    }
    return this.enqueue('broadcast', async () => {
      await this.addon.collective(NCCL_KIND.broadcast, this.handle, buf, null, code, 0, root);
      return buf;
    });
  }

  /** An allReduce of one int32 (NCCL has no barrier). */
  async barrier(): Promise<void> {
    await this.allReduce(new Int32Array(1));
  }

  /**
   * Waits for queued collectives, then `ncclCommDestroy`. After a timed-out collective (its NCCL call may still be
   * running on the device buffer) the communicator is left to the process's end instead. Never throws.
   */
  async close(): Promise<void> {
    await this.queue;
    if (this.failure?.code !== 'E_COLLECTIVE_CLOSED' && !this.stuck) this.addon.destroy(this.handle);
    this.failure = new PfcError('E_COLLECTIVE_CLOSED', `nccl: communicator of rank ${this.rank} is closed`);
  }

  // One NCCL error leaves the ranks out of step (the others may be inside the collective), so a failure is sticky.
  private enqueue<R>(kind: string, fn: () => Promise<R>): Promise<R> {
    const run = async (): Promise<R> => {
      if (this.failure) throw this.failure;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          this.stuck = true;
          reject(
            new PfcError(
              'E_COLLECTIVE_TIMEOUT',
              `nccl ${kind}: rank ${this.rank} waited ${this.timeoutMs} ms; another rank died or stopped calling collectives. NCCL cannot cancel a collective: call abort() to end the job`,
              { details: { op: kind, rank: this.rank } },
            ),
          );
        }, this.timeoutMs);
      });
      try {
        return await Promise.race([fn(), timeout]);
      } catch (err) {
        const e =
          err instanceof PfcError ? err : new PfcError('E_NCCL', `nccl ${kind}: rank ${this.rank}: ${(err as Error).message}`, { cause: err, details: { op: kind, rank: this.rank } });
        this.failure ??= e;
        throw e;
      } finally {
        clearTimeout(timer);
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }
}
