import { PfcError } from '@pfc/core';
import { evenCounts, type CollectiveArray, type Communicator, type ReduceOp } from './communicator';
import { dtypeName, reduceInto } from './reduce';

interface Pending {
  kind: string;
  buf: CollectiveArray;
  op?: ReduceOp;
  root?: number;
  counts?: readonly number[];
  resolve: (v: CollectiveArray | undefined) => void;
  reject: (e: unknown) => void;
}

export interface LocalGroupOptions {
  /** Milliseconds a rank waits for the others in one collective before `E_COLLECTIVE_TIMEOUT` (default 60000). */
  timeoutMs?: number;
}

/** State shared by the ranks of one {@link createLocalGroup}. */
class LocalGroup {
  readonly pending: (Pending | undefined)[];
  failure: PfcError | null = null;
  closed = 0;
  constructor(
    readonly worldSize: number,
    readonly timeoutMs: number,
  ) {
    this.pending = new Array(worldSize).fill(undefined);
  }

  fail(err: PfcError): void {
    if (this.failure) return;
    this.failure = err;
    for (let r = 0; r < this.worldSize; r++) {
      const p = this.pending[r];
      this.pending[r] = undefined;
      p?.reject(err);
    }
  }

  arrive(rank: number, p: Pending): Promise<CollectiveArray | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    const promise = new Promise<CollectiveArray | undefined>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = this.pending.map((x, r) => (x ? -1 : r)).filter((r) => r >= 0);
        this.fail(
          new PfcError('E_COLLECTIVE_TIMEOUT', `local ${p.kind}: rank(s) ${missing.join(', ')} did not join within ${this.timeoutMs} ms`, {
            details: { op: p.kind, missing },
          }),
        );
      }, this.timeoutMs);
      timer.unref?.();
      p.resolve = (v) => {
        clearTimeout(timer);
        resolve(v);
      };
      p.reject = (e) => {
        clearTimeout(timer);
        reject(e);
      };
    });
    this.pending[rank] = p;
    if (this.pending.every((x) => x !== undefined)) this.complete();
    return promise;
  }

  private complete(): void {
    const ps = this.pending.slice() as Pending[];
    this.pending.fill(undefined);
    const first = ps[0]!;
    for (let r = 1; r < ps.length; r++) {
      const p = ps[r]!;
      const why =
        p.kind !== first.kind
          ? `rank 0 called ${first.kind} but rank ${r} called ${p.kind}`
          : dtypeName(p.buf) !== dtypeName(first.buf)
            ? `rank 0 passed ${dtypeName(first.buf)} but rank ${r} passed ${dtypeName(p.buf)}`
            : first.kind !== 'allGather' && first.kind !== 'barrier' && p.buf.length !== first.buf.length
              ? `rank 0 passed ${first.buf.length} elements but rank ${r} passed ${p.buf.length}`
              : p.op !== first.op || p.root !== first.root
                ? `ranks disagree on the operator or root (${first.op ?? first.root} vs ${p.op ?? p.root})`
                : null;
      if (why) {
        const err = new PfcError('E_COLLECTIVE_MISMATCH', `local ${first.kind}: ${why}`, { details: { op: first.kind } });
        this.failure = err;
        for (const q of ps) q.reject(err);
        return;
      }
    }
    try {
      const bufs = ps.map((p) => p.buf);
      switch (first.kind) {
        case 'barrier':
          for (const p of ps) p.resolve(undefined);
          return;
        case 'allReduce': {
          const out = reduceInto(new (first.buf.constructor as new (n: number) => CollectiveArray)(first.buf.length), bufs, first.op!);
          for (const p of ps) {
            p.buf.set(out as never);
            p.resolve(p.buf);
          }
          return;
        }
        case 'allGather': {
          const total = bufs.reduce((a, b) => a + b.length, 0);
          for (const p of ps) {
            const out = new (first.buf.constructor as new (n: number) => CollectiveArray)(total);
            let off = 0;
            for (const b of bufs) {
              out.set(b as never, off);
              off += b.length;
            }
            p.resolve(out);
          }
          return;
        }
        case 'reduceScatter': {
          const counts = first.counts ?? evenCounts(first.buf.length, this.worldSize);
          let off = 0;
          ps.forEach((p, r) => {
            const n = counts[r]!;
            const out = new (first.buf.constructor as new (n: number) => CollectiveArray)(n);
            reduceInto(out, bufs, first.op!, off, n);
            off += n;
            p.resolve(out);
          });
          return;
        }
        case 'broadcast': {
          const src = bufs[first.root!]!;
          for (const p of ps) {
            if (p.buf !== src) p.buf.set(src as never);
            p.resolve(p.buf);
          }
          return;
        }
      }
    } catch (err) {
      for (const p of ps) p.reject(err);
    }
  }
}

/**
 * A rank of a group whose ranks are async tasks in one thread. Useful for tests, examples and single-process runs
 * of code written against {@link Communicator}. Create a group with {@link createLocalGroup}.
 */
export class LocalCommunicator implements Communicator {
  readonly backend = 'local';
  private closed = false;

  /** @internal */
  constructor(
    private readonly group: LocalGroup,
    readonly rank: number,
  ) {}

  get worldSize(): number {
    return this.group.worldSize;
  }

  /** Makes every pending and future collective of the group fail with `err` (used when a rank fails). */
  abort(err: unknown): void {
    const e =
      err instanceof PfcError && err.code === 'E_RANK_FAILED'
        ? err
        : new PfcError('E_RANK_FAILED', `rank ${this.rank} failed: ${err instanceof Error ? err.message : String(err)}`, {
            cause: err,
            details: { rank: this.rank },
          });
    this.group.fail(e);
  }

  private call(kind: string, buf: CollectiveArray, extra: Partial<Pending> = {}): Promise<CollectiveArray | undefined> {
    if (this.closed) return Promise.reject(new PfcError('E_COLLECTIVE_CLOSED', `local ${kind}: communicator of rank ${this.rank} is closed`));
    return this.group.arrive(this.rank, { kind, buf, ...extra } as Pending);
  }

  async allReduce<T extends CollectiveArray>(buf: T, op: ReduceOp = 'sum'): Promise<T> {
    return (await this.call('allReduce', buf, { op })) as T;
  }

  async allGather<T extends CollectiveArray>(buf: T): Promise<T> {
    return (await this.call('allGather', buf)) as T;
  }

  async reduceScatter<T extends CollectiveArray>(buf: T, op: ReduceOp = 'sum', counts?: readonly number[]): Promise<T> {
    if (counts && (counts.length !== this.worldSize || counts.reduce((a, b) => a + b, 0) !== buf.length)) {
      throw new PfcError(
        'E_ARGUMENT',
        `reduceScatter: argument 'counts' must have ${this.worldSize} entries summing to ${buf.length}, got [${counts.join(', ')}]`,
      );
    }
    return (await this.call('reduceScatter', buf, { op, counts })) as T;
  }

  async broadcast<T extends CollectiveArray>(buf: T, root = 0): Promise<T> {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw new PfcError('E_ARGUMENT', `broadcast: argument 'root' must be an integer in [0, ${this.worldSize}), got ${root}`);
    }
    return (await this.call('broadcast', buf, { root })) as T;
  }

  async barrier(): Promise<void> {
    await this.call('barrier', new Int32Array(0));
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Creates the `worldSize` ranks of one in-thread group. */
export function createLocalGroup(worldSize: number, options: LocalGroupOptions = {}): LocalCommunicator[] {
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new PfcError('E_WORLD_SIZE', `createLocalGroup: argument 'worldSize' must be a positive integer, got ${worldSize}`);
  }
  const group = new LocalGroup(worldSize, options.timeoutMs ?? 60_000);
  return Array.from({ length: worldSize }, (_, r) => new LocalCommunicator(group, r));
}

/**
 * Runs `fn` on every rank of a new in-thread group and returns the ranks' results in rank order. If a rank throws,
 * the others' collectives fail with `E_RANK_FAILED` and the first error is rethrown.
 */
export async function runLocal<R>(worldSize: number, fn: (comm: Communicator) => Promise<R> | R, options: LocalGroupOptions = {}): Promise<R[]> {
  const comms = createLocalGroup(worldSize, options);
  const settled = await Promise.allSettled(
    comms.map(async (c) => {
      try {
        return await fn(c);
      } catch (err) {
        c.abort(err);
        throw err;
      }
    }),
  );
  const failed = settled.find((s) => s.status === 'rejected' && !(PfcError.is(s.reason, 'E_RANK_FAILED')));
  const anyFailed = failed ?? settled.find((s) => s.status === 'rejected');
  if (anyFailed && anyFailed.status === 'rejected') throw anyFailed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<R>).value);
}
