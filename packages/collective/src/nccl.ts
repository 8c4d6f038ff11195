import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { PfcError } from '@pfc/core';
import { evenCounts, type CollectiveArray, type Communicator, type ReduceOp } from './communicator';
import { dtypeCode, loadAddon } from './native';

/** The NCCL binding (native/nccl.cc): loads libnccl.so.2 and libcudart with dlopen on first use. */
interface NcclAddon {
  available(): { ok: boolean; error?: string; ncclVersion?: number; devices?: number };
  uniqueId(): Uint8Array;
  initRank(id: Uint8Array, nranks: number, rank: number, device: number): object;
  destroy(handle: object): void;
  collective(kind: number, handle: object, a: CollectiveArray, b: CollectiveArray | null, dtype: number, op: number, root: number): Promise<void>;
}

export const NCCL_INSTALL_HINT =
  'the NCCL backend needs an NVIDIA GPU with the CUDA runtime (libcudart) and NCCL (libnccl.so.2, e.g. Debian/Ubuntu `libnccl2`) on the library path';

const ALL_REDUCE = 0;
const ALL_GATHER = 1;
const REDUCE_SCATTER = 2;
const BROADCAST = 3;
const NCCL_SUM = 0;
const NCCL_MAX = 2;

/** How ranks agree on NCCL's unique id: through a bootstrap communicator (e.g. MPI) or a shared file. */
export type NcclBootstrap = { communicator: Communicator } | { file: string; rank: number; worldSize: number; timeoutMs?: number };

/** Options of {@link NcclCommunicator.create}. */
export interface NcclOptions {
  bootstrap: NcclBootstrap;
  /** CUDA device of this rank (default 0; one process per GPU: the node-local rank). */
  device?: number;
}

/** What the NCCL binding finds on this machine: `{ ok: false, error }` names the missing library. */
export function ncclAvailability(): { ok: boolean; error?: string; ncclVersion?: number; devices?: number } {
  try {
    return loadAddon<NcclAddon>('pfc_nccl', 'nccl', 'run `npm run build:native -w @pfc/collective`').available();
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
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
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly addon: NcclAddon,
    private readonly handle: object,
    readonly rank: number,
    readonly worldSize: number,
    readonly device: number,
    private readonly bootstrapComm: Communicator | null,
  ) {}

  /** Ends the job through the bootstrap communicator (MPI: `MPI_Abort`); a no-op with the file bootstrap. */
  abort(reason?: unknown): void {
    this.bootstrapComm?.abort?.(reason);
  }

  /**
   * Creates this rank's NCCL communicator: rank 0 makes the unique id, the bootstrap hands it to every rank, then
   * every rank calls `ncclCommInitRank` (collective). Throws `E_BACKEND_UNAVAILABLE` naming the missing library
   * when NCCL or the CUDA runtime cannot be loaded or no GPU is visible.
   */
  static async create(options: NcclOptions): Promise<NcclCommunicator> {
    const addon = loadAddon<NcclAddon>('pfc_nccl', 'nccl', 'run `npm run build:native -w @pfc/collective`');
    const avail = addon.available();
    if (!avail.ok || !avail.devices) {
      throw new PfcError('E_BACKEND_UNAVAILABLE', `nccl backend unavailable: ${avail.error ?? 'no CUDA device is visible'}; ${NCCL_INSTALL_HINT}`, {
        details: { backend: 'nccl', ...avail },
      });
    }
    const b = options.bootstrap;
    const rank = 'communicator' in b ? b.communicator.rank : b.rank;
    const worldSize = 'communicator' in b ? b.communicator.worldSize : b.worldSize;
    let id: Uint8Array;
    if ('communicator' in b) {
      const words = new Int32Array(32);
      if (rank === 0) words.set(new Int32Array(addon.uniqueId().slice().buffer));
      await b.communicator.broadcast(words, 0);
      id = new Uint8Array(words.buffer);
    } else {
      if (rank === 0) {
        const tmp = `${b.file}.tmp-${process.pid}`;
        writeFileSync(tmp, Buffer.from(addon.uniqueId()));
        renameSync(tmp, b.file);
      }
      const deadline = Date.now() + (b.timeoutMs ?? 60_000);
      while (!existsSync(b.file)) {
        if (Date.now() > deadline) throw new PfcError('E_COLLECTIVE_TIMEOUT', `nccl bootstrap: ${b.file} did not appear within ${b.timeoutMs ?? 60_000} ms (rank 0 writes it)`);
        await sleep(20);
      }
      id = new Uint8Array(readFileSync(b.file));
      if (id.length !== 128) throw new PfcError('E_NCCL', `nccl bootstrap: ${b.file} holds ${id.length} bytes, expected a 128-byte ncclUniqueId`);
    }
    const device = options.device ?? 0;
    let handle: object;
    try {
      handle = addon.initRank(id, worldSize, rank, device);
    } catch (cause) {
      throw new PfcError('E_NCCL', `nccl: rank ${rank} on device ${device}: ${(cause as Error).message}`, { cause });
    }
    return new NcclCommunicator(addon, handle, rank, worldSize, device, 'communicator' in b ? b.communicator : null);
  }

  async allReduce<T extends CollectiveArray>(buf: T, op: ReduceOp = 'sum'): Promise<T> {
    const code = dtypeCode(buf);
    return this.enqueue(async () => {
      await this.addon.collective(ALL_REDUCE, this.handle, buf, null, code, op === 'max' ? NCCL_MAX : NCCL_SUM, 0);
      return buf;
    });
  }

  async allGather<T extends CollectiveArray>(buf: T): Promise<T> {
    const code = dtypeCode(buf);
    return this.enqueue(async () => {
      const lengths = new Int32Array(this.worldSize);
      await this.addon.collective(ALL_GATHER, this.handle, Int32Array.of(buf.length), lengths, 2, 0, 0);
      const max = Math.max(...lengths);
      const ctor = buf.constructor as new (n: number) => T;
      const send = buf.length === max ? buf : new ctor(max);
      if (send !== buf) send.set(buf as never);
      const recv = new ctor(max * this.worldSize);
      await this.addon.collective(ALL_GATHER, this.handle, send, recv, code, 0, 0);
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
    const cs = counts ? [...counts] : evenCounts(buf.length, this.worldSize);
    if (cs.length !== this.worldSize || cs.reduce((a, b) => a + b, 0) !== buf.length) {
      throw new PfcError('E_ARGUMENT', `reduceScatter: argument 'counts' must have ${this.worldSize} entries summing to ${buf.length}, got [${cs.join(', ')}]`);
    }
    return this.enqueue(async () => {
      const max = Math.max(...cs);
      const ctor = buf.constructor as new (n: number) => T;
      const padded = new ctor(max * this.worldSize);
      let off = 0;
      cs.forEach((n, r) => {
        padded.set(buf.subarray(off, off + n) as never, r * max);
        off += n;
      });
      const recv = new ctor(max);
      await this.addon.collective(REDUCE_SCATTER, this.handle, padded, recv, code, op === 'max' ? NCCL_MAX : NCCL_SUM, 0);
      return recv.slice(0, cs[this.rank]) as T;
    });
  }

  async broadcast<T extends CollectiveArray>(buf: T, root = 0): Promise<T> {
    const code = dtypeCode(buf);
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw new PfcError('E_ARGUMENT', `broadcast: argument 'root' must be an integer in [0, ${this.worldSize}), got ${root}`);
    }
    return this.enqueue(async () => {
      await this.addon.collective(BROADCAST, this.handle, buf, null, code, 0, root);
      return buf;
    });
  }

  async barrier(): Promise<void> {
    await this.allReduce(new Int32Array(1));
  }

  async close(): Promise<void> {
    await this.queue;
    if (!this.closed) this.addon.destroy(this.handle);
    this.closed = true;
  }

  private enqueue<R>(fn: () => Promise<R>): Promise<R> {
    if (this.closed) return Promise.reject(new PfcError('E_COLLECTIVE_CLOSED', `nccl: communicator of rank ${this.rank} is closed`));
    const run = async (): Promise<R> => {
      try {
        return await fn();
      } catch (err) {
        throw err instanceof PfcError ? err : new PfcError('E_NCCL', `nccl: rank ${this.rank}: ${(err as Error).message}`, { cause: err });
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }
}
