/**
 * A stand-in for the NCCL binding (native/nccl.cc) with the same interface, for CPU machines: its collectives run
 * over another communicator (a local or threads group playing the GPUs' links), and it checks the contract the real
 * binding relies on without checking (the dtype code matches the array, buffer lengths fit the collective), so a
 * TypeScript bug that would corrupt device memory fails here instead. Every call is logged in order.
 */
import type { CollectiveArray, Communicator } from '../communicator';
import { NCCL_KIND, type NcclAddon } from '../nccl';

export type FakeNcclCall =
  | { fn: 'available' | 'uniqueId' | 'destroy' }
  | { fn: 'initRank'; id: string; nranks: number; rank: number; device: number }
  | { fn: 'collective'; kind: string; dtype: number; op: number; root: number; a: number; b: number | null };

export interface FakeNcclOptions {
  /** Carries the collectives; its rank and size must be what initRank is given. */
  fabric?: Communicator;
  /** Visible CUDA devices (default 1); 0 stands for a machine whose driver sees no GPU. */
  devices?: number;
  /** What `available()` reports when the libraries "fail to load" (e.g. `'libnccl.so.2 could not be loaded'`). */
  loadError?: string;
  /** Makes `uniqueId()` throw this message, as the binding does when `ncclGetUniqueId` fails. */
  uniqueIdError?: string;
  /** Makes `initRank()` throw this message (the binding: `ncclCommInitRank: <ncclGetErrorString>`). */
  initError?: string;
  /**
   * `[count]` in a SharedArrayBuffer shared by the ranks' fakes: initRank blocks (Atomics.wait) until `nranks`
   * ranks have called it, as ncclCommInitRank does. Without it initRank returns at once.
   */
  initBarrier?: Int32Array;
  /** The message a collective rejects with, by call number (0-based, lengths exchanges included), else none. */
  failCollective?: (index: number, call: FakeNcclCall & { fn: 'collective' }) => string | undefined;
  /** First byte of the ids `uniqueId()` makes (the others follow), so that ranks' ids can be told apart. */
  seed?: number;
}

const KIND_NAMES = Object.fromEntries(Object.entries(NCCL_KIND).map(([k, v]) => [v, k])) as Record<number, string>;
// The binding's dtype codes (src/native.ts dtypeCode) and the arrays they stand for.
const DTYPE_CTORS = [Float32Array, Float64Array, Int32Array, Uint16Array] as const;
// ncclRedOp_t: ncclSum 0, ncclProd 1, ncclMax 2, ncclMin 3.
const OPS: Record<number, 'sum' | 'max'> = { 0: 'sum', 2: 'max' };

export const hex = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');

/** A fake binding for one rank; `calls` logs what the TypeScript side asked of it. */
export function fakeNcclAddon(options: FakeNcclOptions = {}): NcclAddon & { calls: FakeNcclCall[] } {
  const calls: FakeNcclCall[] = [];
  const destroyed = new WeakSet<object>();
  let collectives = 0;
  let ids = 0;
  const addon = {
    calls,
    available() {
      calls.push({ fn: 'available' });
      if (options.loadError) return { ok: false, error: options.loadError };
      return { ok: true, ncclVersion: 22105, devices: options.devices ?? 1 };
    },
    uniqueId() {
      calls.push({ fn: 'uniqueId' });
      if (options.uniqueIdError) throw new Error(options.uniqueIdError);
      const start = (options.seed ?? 1) + 16 * ids++;
      return Uint8Array.from({ length: 128 }, (_, i) => (start + i) & 255);
    },
    initRank(id: Uint8Array, nranks: number, rank: number, device: number) {
      calls.push({ fn: 'initRank', id: hex(id), nranks, rank, device });
      if (id.length !== 128) throw new Error(`fake nccl: initRank got a ${id.length}-byte id`);
      if (options.initError) throw new Error(options.initError);
      const f = options.fabric;
      if (f && (f.worldSize !== nranks || f.rank !== rank)) throw new Error(`fake nccl: initRank(rank ${rank} of ${nranks}) on a fabric rank ${f.rank} of ${f.worldSize}`);
      const b = options.initBarrier;
      if (b) {
        Atomics.add(b, 0, 1);
        const deadline = Date.now() + 10_000;
        for (let n = Atomics.load(b, 0); n < nranks; n = Atomics.load(b, 0)) {
          if (Date.now() > deadline) throw new Error(`fake nccl: ncclCommInitRank: only ${n} of ${nranks} ranks joined`);
          Atomics.wait(b, 0, n, 20);
        }
      }
      return { rank, nranks };
    },
    destroy(handle: object) {
      calls.push({ fn: 'destroy' });
      destroyed.add(handle);
    },
    async collective(kind: number, handle: object, a: CollectiveArray, b: CollectiveArray | null, dtype: number, op: number, root: number): Promise<void> {
      const call = { fn: 'collective' as const, kind: KIND_NAMES[kind] ?? `kind ${kind}`, dtype, op, root, a: a.length, b: b ? b.length : null };
      calls.push(call);
      const failure = options.failCollective?.(collectives++, call);
      if (failure) throw new Error(failure);
      if (destroyed.has(handle)) throw new Error('fake nccl: collective on a destroyed communicator');
      const ctor = DTYPE_CTORS[dtype];
      if (!ctor || !(a instanceof ctor) || (b && !(b instanceof ctor))) {
        throw new Error(`fake nccl: dtype code ${dtype} does not match ${a.constructor.name}${b ? `/${b.constructor.name}` : ''}`);
      }
      const f = options.fabric;
      if (!f) throw new Error('fake nccl: no fabric to run collectives on');
      const n = f.worldSize;
      const red = OPS[op];
      switch (kind) {
        case NCCL_KIND.allReduce:
          if (b || !red) throw new Error(`fake nccl: allReduce needs b = null and op sum/max, got b ${b?.length}, op ${op}`);
          await f.allReduce(a, red);
          return;
        case NCCL_KIND.broadcast:
          if (b) throw new Error('fake nccl: broadcast needs b = null');
          await f.broadcast(a, root);
          return;
        case NCCL_KIND.allGather: {
          if (!b || b.length !== a.length * n) throw new Error(`fake nccl: allGather needs b of ${a.length} × ${n}, got ${b?.length}`);
          b.set((await f.allGather(a)) as never);
          return;
        }
        case NCCL_KIND.reduceScatter: {
          if (!b || a.length !== b.length * n || !red) throw new Error(`fake nccl: reduceScatter needs a of ${b?.length} × ${n} and op sum/max, got a ${a.length}, op ${op}`);
          b.set((await f.reduceScatter(a.slice(), red)) as never);
          return;
        }
        default:
          throw new Error(`fake nccl: unknown collective kind ${kind}`);
      }
    },
  };
  return addon;
}
