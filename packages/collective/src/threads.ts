import { PfcError } from '@pfc/core';
import { evenCounts, type CollectiveArray, type Communicator, type ReduceOp } from './communicator';
import { dtypeName, reduceInto } from './reduce';

/**
 * Layout of the group's control block (an Int32Array over a SharedArrayBuffer). Every rank and the launcher
 * share it; the hot path touches only COUNT, GEN and the rank's descriptor.
 */
const COUNT = 0; // ranks arrived at the current sync point
const GEN = 1; // sync generation, bumped by the last rank to arrive
const FAIL = 2; // 0, or 1 + the rank that failed first
const FAIL_KIND = 3; // why: see FAIL_KINDS
const ENTERED = 8; // ENTERED + r: sync points rank r has entered (names the missing ranks on a timeout)
const DESC_WORDS = 8;
const FAIL_KINDS = ['', 'threw', 'died', 'timed out', 'mismatch'] as const;

/** Operation codes written to the descriptor so that ranks can check that they called the same collective. */
const KINDS = ['barrier', 'allReduce', 'allGather', 'reduceScatter', 'broadcast'] as const;
type Kind = (typeof KINDS)[number];
const DTYPES = ['float32', 'float64', 'int32', 'float16'] as const;

/** Bytes of the control block for `worldSize` ranks. */
export function controlBytes(worldSize: number): number {
  return 4 * (ENTERED + worldSize + 2 * worldSize * DESC_WORDS);
}

/** Bytes of the data arena for `worldSize` ranks with `slotBytes` per rank: two banks of one slot per rank plus a result slot. */
export function arenaBytes(worldSize: number, slotBytes: number): number {
  return 2 * (worldSize + 1) * slotBytes;
}

/** How a rank waits for the others at a sync point. */
export type ThreadsWaitMode = 'async' | 'block';

/** The shared memory and settings of one threads group, as handed to each rank. */
export interface ThreadsGroupMemory {
  worldSize: number;
  /** Control block, {@link controlBytes} long. */
  control: SharedArrayBuffer;
  /** Data arena, {@link arenaBytes} long. */
  arena: SharedArrayBuffer;
  /** Bytes per rank slot (a multiple of 8); larger messages go through in chunks of this size. */
  slotBytes: number;
  /** Milliseconds a rank waits for the others at one sync point before `E_COLLECTIVE_TIMEOUT`. */
  timeoutMs: number;
  /**
   * `'async'` (default): wait with `Atomics.waitAsync`, so the rank's event loop keeps running (timers, I/O,
   * prefetching) while it waits. `'block'`: `Atomics.wait`, lower latency for small messages, but the rank's
   * event loop is frozen while it waits.
   */
  wait?: ThreadsWaitMode;
}

/** Allocates the shared memory of a threads group. */
export function allocateThreadsGroup(worldSize: number, options: { slotBytes?: number; timeoutMs?: number; wait?: ThreadsWaitMode } = {}): ThreadsGroupMemory {
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new PfcError('E_WORLD_SIZE', `allocateThreadsGroup: argument 'worldSize' must be a positive integer, got ${worldSize}`);
  }
  const slotBytes = options.slotBytes ?? 4 << 20;
  if (!Number.isInteger(slotBytes) || slotBytes < 8 || slotBytes % 8 !== 0) {
    throw new PfcError('E_ARGUMENT', `allocateThreadsGroup: argument 'slotBytes' must be a positive multiple of 8, got ${slotBytes}`);
  }
  const timeoutMs = options.timeoutMs ?? 60_000;
  if (!(timeoutMs > 0)) throw new PfcError('E_ARGUMENT', `allocateThreadsGroup: argument 'timeoutMs' must be > 0, got ${timeoutMs}`);
  return {
    worldSize,
    control: new SharedArrayBuffer(controlBytes(worldSize)),
    arena: new SharedArrayBuffer(arenaBytes(worldSize, slotBytes)),
    slotBytes,
    timeoutMs,
    wait: options.wait ?? 'async',
  };
}

/**
 * Marks the group failed because `rank` failed (`kind`: why), and wakes every waiting rank. The first failure wins.
 * Used by ranks that throw and by the launcher when a rank's thread dies.
 */
export function markGroupFailed(control: SharedArrayBuffer, rank: number, kind: 'threw' | 'died' | 'timed out' | 'mismatch'): void {
  const c = new Int32Array(control);
  if (Atomics.compareExchange(c, FAIL, 0, rank + 1) === 0) Atomics.store(c, FAIL_KIND, FAIL_KINDS.indexOf(kind));
  Atomics.notify(c, GEN);
}

/** The rank whose failure poisoned the group, or -1. */
export function failedRank(control: SharedArrayBuffer): number {
  return Atomics.load(new Int32Array(control), FAIL) - 1;
}

type Ctor = new (buf: ArrayBufferLike, byteOffset?: number, length?: number) => CollectiveArray;

/** Waits slice at most this long, so that a failure flagged between a check and a wait is seen promptly. */
const WAIT_SLICE_MS = 50;

/**
 * A rank of a group whose ranks are worker threads of one process. Ranks exchange data through one shared arena
 * (SharedArrayBuffer) and synchronise with sequence numbers and `Atomics.wait`/`waitAsync`/`notify`: no data goes
 * through message passing. Messages larger than a slot go through in slot-sized chunks, double-buffered so that
 * each chunk costs one sync point (two for allReduce, whose reduction is split across ranks).
 *
 * Reductions are computed exactly as {@link LocalCommunicator} does (`reduceInto`: rank order, float32/fp16
 * accumulated in double/float32 and rounded once), so threads and local give bit-identical results.
 *
 * Start ranks with {@link runThreads}; build one directly only inside your own worker from a {@link ThreadsGroupMemory}.
 */
export class ThreadsCommunicator implements Communicator {
  readonly backend = 'threads';
  readonly worldSize: number;
  private readonly ctrl: Int32Array;
  private readonly arena: SharedArrayBuffer;
  private readonly slotBytes: number;
  private readonly timeoutMs: number;
  private readonly mode: ThreadsWaitMode;
  private nsync = 0;
  private closed = false;
  /** Serialises collectives issued without awaiting the previous one. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    memory: ThreadsGroupMemory,
    readonly rank: number,
  ) {
    this.worldSize = memory.worldSize;
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.worldSize) {
      throw new PfcError('E_ARGUMENT', `ThreadsCommunicator: argument 'rank' must be an integer in [0, ${this.worldSize}), got ${rank}`);
    }
    this.ctrl = new Int32Array(memory.control);
    this.arena = memory.arena;
    this.slotBytes = memory.slotBytes;
    this.timeoutMs = memory.timeoutMs;
    this.mode = memory.wait ?? 'async';
  }

  /** Makes every pending and future collective of the group fail with `E_RANK_FAILED` naming this rank. */
  abort(_err?: unknown): void {
    markGroupFailed(this.ctrl.buffer as SharedArrayBuffer, this.rank, 'threw');
  }

  async allReduce<T extends CollectiveArray>(buf: T, op: ReduceOp = 'sum'): Promise<T> {
    checkOp('allReduce', op);
    return this.enqueue(() => this.doReduce('allReduce', buf, op, evenCounts(buf.length, this.worldSize), null));
  }

  async allGather<T extends CollectiveArray>(buf: T): Promise<T> {
    return this.enqueue(() => this.doAllGather(buf));
  }

  async reduceScatter<T extends CollectiveArray>(buf: T, op: ReduceOp = 'sum', counts?: readonly number[]): Promise<T> {
    checkOp('reduceScatter', op);
    if (counts && (counts.length !== this.worldSize || counts.some((c) => !Number.isInteger(c) || c < 0) || counts.reduce((a, b) => a + b, 0) !== buf.length)) {
      throw new PfcError(
        'E_ARGUMENT',
        `reduceScatter: argument 'counts' must have ${this.worldSize} non-negative integers summing to ${buf.length}, got [${counts.join(', ')}]`,
      );
    }
    const cs = counts ? [...counts] : evenCounts(buf.length, this.worldSize);
    const ctor = buf.constructor as new (n: number) => T;
    return this.enqueue(() => this.doReduce('reduceScatter', buf, op, cs, new ctor(cs[this.rank]!)));
  }

  async broadcast<T extends CollectiveArray>(buf: T, root = 0): Promise<T> {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw new PfcError('E_ARGUMENT', `broadcast: argument 'root' must be an integer in [0, ${this.worldSize}), got ${root}`);
    }
    return this.enqueue(() => this.doBroadcast(buf, root));
  }

  async barrier(): Promise<void> {
    await this.enqueue(async () => {
      this.describe('barrier', null, 0, 0, 0, 0);
      await this.sync('barrier');
      this.checkDescriptors('barrier');
    });
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private enqueue<R>(fn: () => Promise<R>): Promise<R> {
    if (this.closed) return Promise.reject(new PfcError('E_COLLECTIVE_CLOSED', `threads: communicator of rank ${this.rank} is closed`));
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  // ---- synchronisation ----------------------------------------------------------------------------------------

  private failure(): PfcError | null {
    const culprit = Atomics.load(this.ctrl, FAIL) - 1;
    if (culprit < 0) return null;
    const kind = FAIL_KINDS[Atomics.load(this.ctrl, FAIL_KIND)] ?? 'failed';
    // observedBy marks an error as a consequence of another rank's failure (the launcher reports the original).
    const details = { rank: culprit, reason: kind, observedBy: this.rank };
    if (kind === 'mismatch') return new PfcError('E_COLLECTIVE_MISMATCH', `threads: the group is unusable after a collective mismatch`, { details });
    if (kind === 'timed out') return new PfcError('E_COLLECTIVE_TIMEOUT', `threads: rank ${culprit} did not join a collective within ${this.timeoutMs} ms`, { details });
    return new PfcError('E_RANK_FAILED', `threads: rank ${culprit} ${kind === 'died' ? 'died' : 'failed'}; collectives of rank ${this.rank} cannot complete`, { details });
  }

  /** Returns once every rank has reached the same sync point. */
  private async sync(what: string): Promise<void> {
    const c = this.ctrl;
    const fail = this.failure();
    if (fail) throw fail;
    this.nsync++;
    Atomics.add(c, ENTERED + this.rank, 1);
    const gen = Atomics.load(c, GEN);
    if (Atomics.add(c, COUNT, 1) === this.worldSize - 1) {
      Atomics.store(c, COUNT, 0);
      Atomics.add(c, GEN, 1);
      Atomics.notify(c, GEN);
      return;
    }
    const deadline = Date.now() + this.timeoutMs;
    // A pending waitAsync does not keep a worker's event loop alive (its wake-up is not a libuv handle); a timer does.
    const keepAlive = this.mode === 'async' ? setInterval(noop, 1000) : null;
    try {
      await this.waitFor(gen, deadline, what);
    } finally {
      if (keepAlive) clearInterval(keepAlive);
    }
  }

  private async waitFor(gen: number, deadline: number, what: string): Promise<void> {
    const c = this.ctrl;
    while (Atomics.load(c, GEN) === gen) {
      const f = this.failure();
      if (f) throw f;
      const left = deadline - Date.now();
      if (left <= 0) {
        const mine = Atomics.load(c, ENTERED + this.rank);
        const missing: number[] = [];
        for (let r = 0; r < this.worldSize; r++) if (Atomics.load(c, ENTERED + r) < mine) missing.push(r);
        markGroupFailed(c.buffer as SharedArrayBuffer, missing[0] ?? this.rank, 'timed out');
        throw new PfcError('E_COLLECTIVE_TIMEOUT', `threads ${what}: rank(s) ${missing.join(', ')} did not join within ${this.timeoutMs} ms`, {
          details: { op: what, missing, rank: this.rank },
        });
      }
      const slice = Math.min(left, WAIT_SLICE_MS);
      if (this.mode === 'block') Atomics.wait(c, GEN, gen, slice);
      else {
        const w = (Atomics as unknown as AtomicsWaitAsync).waitAsync(c, GEN, gen, slice);
        if (w.async) await w.value;
      }
    }
  }

  private describe(kind: Kind, buf: CollectiveArray | null, length: number, op: number, root: number, extra: number): void {
    // Double-buffered like the data: a fast rank writes its next descriptor into the other bank.
    const d = ENTERED + this.worldSize + (this.bank * this.worldSize + this.rank) * DESC_WORDS;
    const c = this.ctrl;
    c[d] = KINDS.indexOf(kind);
    c[d + 1] = buf ? DTYPES.indexOf(dtypeName(buf)) : -1;
    c[d + 2] = length;
    c[d + 3] = op;
    c[d + 4] = root;
    c[d + 5] = extra;
  }

  private desc(r: number, field: number): number {
    // Called after the collective's first sync, so the bank it was written in is the current parity.
    return this.ctrl[ENTERED + this.worldSize + ((this.nsync & 1) * this.worldSize + r) * DESC_WORDS + field]!;
  }

  /** After the first sync of a collective: every rank sees the same descriptors, so all fail or none. */
  private checkDescriptors(kind: Kind, sameLength = true): void {
    let why: string | null = null;
    for (let r = 1; r < this.worldSize && !why; r++) {
      const k0 = this.desc(0, 0);
      const k = this.desc(r, 0);
      if (k !== k0) why = `rank 0 called ${KINDS[k0]} but rank ${r} called ${KINDS[k]}`;
      else if (this.desc(r, 1) !== this.desc(0, 1)) why = `rank 0 passed ${DTYPES[this.desc(0, 1)]} but rank ${r} passed ${DTYPES[this.desc(r, 1)]}`;
      else if (sameLength && this.desc(r, 2) !== this.desc(0, 2)) why = `rank 0 passed ${this.desc(0, 2)} elements but rank ${r} passed ${this.desc(r, 2)}`;
      else if (this.desc(r, 3) !== this.desc(0, 3) || this.desc(r, 4) !== this.desc(0, 4)) why = `ranks 0 and ${r} disagree on the operator or root`;
      else if (this.desc(r, 5) !== this.desc(0, 5)) why = `ranks 0 and ${r} passed different counts`;
    }
    if (why) {
      markGroupFailed(this.ctrl.buffer as SharedArrayBuffer, 0, 'mismatch');
      throw new PfcError('E_COLLECTIVE_MISMATCH', `threads ${kind}: ${why}`, { details: { op: kind, rank: this.rank } });
    }
  }

  // ---- data movement ------------------------------------------------------------------------------------------

  /** View of `n` elements of rank `r`'s slot (r = worldSize: the result slot) in bank `bank`. */
  private slot(ctor: Ctor, bank: number, r: number, n: number): CollectiveArray {
    const off = (bank * (this.worldSize + 1) + r) * this.slotBytes;
    return new ctor(this.arena, off, n);
  }

  /** Bank that data written now is read from after the next sync (double buffering: see the class comment). */
  private get bank(): number {
    return (this.nsync + 1) & 1;
  }

  /**
   * allReduce (`out` null: in place into `buf`) or reduceScatter (`out`: this rank's slice, `counts` per rank).
   * Each chunk: every rank copies its chunk into its slot; sync; rank q reduces its part of the chunk over all
   * slots into the result slot; sync; every rank copies what it needs from the result slot.
   */
  private async doReduce<T extends CollectiveArray>(kind: Kind, buf: T, op: ReduceOp, counts: number[], out: T | null): Promise<T> {
    const ctor = buf.constructor as Ctor;
    const per = Math.floor(this.slotBytes / buf.BYTES_PER_ELEMENT);
    const n = buf.length;
    this.describe(kind, buf, n, op === 'sum' ? 0 : 1, 0, hashCounts(counts));
    const myStart = counts.slice(0, this.rank).reduce((a, b) => a + b, 0);
    const myEnd = myStart + counts[this.rank]!;
    const chunks = Math.max(1, Math.ceil(n / per));
    for (let k = 0; k < chunks; k++) {
      const lo = k * per;
      const len = Math.min(per, n - lo);
      const b1 = this.bank;
      if (len > 0) this.slot(ctor, b1, this.rank, len).set(buf.subarray(lo, lo + len) as never);
      await this.sync(kind);
      if (k === 0) this.checkDescriptors(kind);
      const part = evenCounts(Math.max(len, 0), this.worldSize);
      const pStart = part.slice(0, this.rank).reduce((a, b) => a + b, 0);
      const pLen = part[this.rank]!;
      const b2 = this.bank;
      if (pLen > 0) {
        const srcs = Array.from({ length: this.worldSize }, (_, r) => this.slot(ctor, b1, r, len));
        reduceInto(this.slot(ctor, b2, this.worldSize, len).subarray(pStart, pStart + pLen), srcs, op, pStart, pLen);
      }
      await this.sync(kind);
      if (len <= 0) continue;
      const res = this.slot(ctor, b2, this.worldSize, len);
      if (out === null) buf.set(res as never, lo);
      else {
        const a = Math.max(lo, myStart);
        const e = Math.min(lo + len, myEnd);
        if (e > a) out.set(res.subarray(a - lo, e - lo) as never, a - myStart);
      }
    }
    return out ?? buf;
  }

  private async doAllGather<T extends CollectiveArray>(buf: T): Promise<T> {
    const ctor = buf.constructor as Ctor;
    const per = Math.floor(this.slotBytes / buf.BYTES_PER_ELEMENT);
    this.describe('allGather', buf, buf.length, 0, 0, 0);
    let lengths: number[] = [];
    let offsets: number[] = [];
    let out: T | null = null;
    let chunks = 1;
    for (let k = 0; k < chunks; k++) {
      const lo = k * per;
      const b = this.bank;
      const mine = Math.min(per, buf.length - lo);
      if (mine > 0) this.slot(ctor, b, this.rank, mine).set(buf.subarray(lo, lo + mine) as never);
      await this.sync('allGather');
      if (k === 0) {
        this.checkDescriptors('allGather', false);
        lengths = Array.from({ length: this.worldSize }, (_, r) => this.desc(r, 2));
        offsets = lengths.map((_, r) => lengths.slice(0, r).reduce((a, x) => a + x, 0));
        out = new (buf.constructor as new (n: number) => T)(lengths.reduce((a, x) => a + x, 0));
        chunks = Math.max(1, Math.ceil(Math.max(...lengths) / per));
      }
      for (let r = 0; r < this.worldSize; r++) {
        const m = Math.min(per, lengths[r]! - lo);
        if (m > 0) out!.set(this.slot(ctor, b, r, m) as never, offsets[r]! + lo);
      }
    }
    // The last chunk's slots are only overwritten two syncs later, after every rank has read them.
    return out!;
  }

  private async doBroadcast<T extends CollectiveArray>(buf: T, root: number): Promise<T> {
    const ctor = buf.constructor as Ctor;
    const per = Math.floor(this.slotBytes / buf.BYTES_PER_ELEMENT);
    this.describe('broadcast', buf, buf.length, 0, root, 0);
    const chunks = Math.max(1, Math.ceil(buf.length / per));
    for (let k = 0; k < chunks; k++) {
      const lo = k * per;
      const len = Math.min(per, buf.length - lo);
      const b = this.bank;
      if (this.rank === root && len > 0) this.slot(ctor, b, root, len).set(buf.subarray(lo, lo + len) as never);
      await this.sync('broadcast');
      if (k === 0) this.checkDescriptors('broadcast');
      if (this.rank !== root && len > 0) buf.set(this.slot(ctor, b, root, len) as never, lo);
    }
    return buf;
  }
}

function noop(): void {}

/** `Atomics.waitAsync` (Node >= 16; typed in lib es2024, newer than this project's lib). */
interface AtomicsWaitAsync {
  waitAsync(a: Int32Array, index: number, value: number, timeout?: number): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
}

function checkOp(fn: string, op: string): void {
  if (op !== 'sum' && op !== 'max') throw new PfcError('E_ARGUMENT', `${fn}: argument 'op' must be 'sum' or 'max', got ${JSON.stringify(op)}`);
}

function hashCounts(counts: readonly number[]): number {
  let h = 17;
  for (const c of counts) h = (Math.imul(h, 31) + c) | 0;
  return h;
}
