import { fromFloat16Bits, toFloat16Bits } from '@pfc/core';
import { evenCounts, type CollectiveArray, type Communicator, type ReduceOp } from './communicator';

/** One check of {@link runConformance}: what was called, whether the result matched the closed form, and a digest of the result bytes. */
export interface ConformanceCheck {
  name: string;
  ok: boolean;
  /** First mismatch, when `ok` is false. */
  why?: string;
  /** FNV-1a of the result's values (as float64, NaN canonical): equal digests across backends mean identical results. */
  digest: string;
}

/** Result of {@link runConformance} on one rank. */
export interface ConformanceReport {
  rank: number;
  worldSize: number;
  backend: string;
  checks: ConformanceCheck[];
}

/** Options of {@link runConformance}. */
export interface ConformanceOptions {
  /** Length of the "large" arrays (default 5000); pick it above the backend's chunk size to exercise chunking. */
  large?: number;
}

/** How much later each rank enters the barrier check than the previous one (rank q waits q times this). */
const BARRIER_STAGGER_MS = 30;

type Dtype = 'float32' | 'float64' | 'int32' | 'float16';
const DTYPES: Dtype[] = ['float32', 'float64', 'int32', 'float16'];

/**
 * Value of element `i` on rank `r`: small multiples of 1/4 (integers for int32), so that every sum over up to 3
 * ranks is exact in fp16, float32 and float64 whatever order a backend reduces in.
 */
function value(dtype: Dtype, r: number, i: number, salt = 0): number {
  const v = ((i * 7 + r * 3 + salt * 5) % 11) - 5;
  return dtype === 'int32' ? v * 1000 + r : v + 0.25 * ((r + i) % 4);
}

function make(dtype: Dtype, values: ArrayLike<number>): CollectiveArray {
  switch (dtype) {
    case 'float32':
      return Float32Array.from(values);
    case 'float64':
      return Float64Array.from(values);
    case 'int32':
      return Int32Array.from(values);
    case 'float16':
      return Uint16Array.from(Array.from(values, (v) => toFloat16Bits(v)));
  }
}

function read(a: CollectiveArray): number[] {
  return a instanceof Uint16Array ? Array.from(a, (h) => fromFloat16Bits(h)) : Array.from(a);
}

function digest(a: CollectiveArray): string {
  // Over the values, with NaN canonicalised: NaN payloads and signs legitimately differ between C and JS.
  const bytes = new Uint8Array(Float64Array.from(read(a), (v) => (Number.isNaN(v) ? NaN : v)).buffer);
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return `${a.length}:${(h >>> 0).toString(16)}`;
}

function same(a: number, b: number): boolean {
  return Object.is(a, b) || a === b || (Number.isNaN(a) && Number.isNaN(b));
}

function reduce(op: ReduceOp, xs: number[]): number {
  if (xs.some(Number.isNaN)) return NaN;
  return op === 'sum' ? xs.reduce((a, b) => a + b, 0) : Math.max(...xs);
}

/**
 * The conformance suite every backend must pass: every collective, every dtype (fp16 in Uint16Array included),
 * empty, tiny and large arrays, uneven allGather lengths and reduceScatter counts, sum and max, NaN and infinity
 * propagation, broadcast from every root, barrier. Call it on every rank of a group; each rank checks its own
 * results against closed forms. Backends are interchangeable when every check passes on every rank and the
 * digests are equal across backends.
 *
 * The barrier check compares `Date.now()` taken on different ranks, so it assumes they read one clock: ranks on one
 * machine, or machines whose clocks agree to the millisecond.
 */
export async function runConformance(comm: Communicator, options: ConformanceOptions = {}): Promise<ConformanceReport> {
  const W = comm.worldSize;
  const r = comm.rank;
  const L = options.large ?? 5000;
  const checks: ConformanceCheck[] = [];
  const check = (name: string, got: CollectiveArray, want: number[]): void => {
    const g = read(got);
    let why: string | undefined;
    if (g.length !== want.length) why = `length ${g.length}, expected ${want.length}`;
    else {
      const i = g.findIndex((x, k) => !same(x, want[k]!));
      if (i >= 0) why = `element ${i} is ${g[i]}, expected ${want[i]}`;
    }
    checks.push({ name, ok: why === undefined, why, digest: digest(got) });
  };
  const ranks = Array.from({ length: W }, (_, q) => q);

  for (const dt of DTYPES) {
    for (const op of ['sum', 'max'] as const) {
      for (const n of [0, 1, 7, L]) {
        const buf = make(dt, Array.from({ length: n }, (_, i) => value(dt, r, i)));
        const out = await comm.allReduce(buf, op);
        const want = Array.from({ length: n }, (_, i) => reduce(op, ranks.map((q) => value(dt, q, i))));
        check(`allReduce ${dt} ${op} n=${n}`, out, want);
        if (out !== buf) checks.push({ name: `allReduce ${dt} ${op} n=${n} in place`, ok: false, why: 'returned a different array', digest: '' });
      }
      // reduceScatter with the default (even) counts and with uneven counts, one rank getting nothing.
      for (const n of [7, L]) {
        const full = Array.from({ length: n }, (_, i) => reduce(op, ranks.map((q) => value(dt, q, i, 1))));
        const countsList: (number[] | undefined)[] = [undefined];
        if (W > 1) countsList.push(ranks.map((q) => (q === 0 ? 0 : q === W - 1 ? n - Math.floor(n / 3) * (W - 2) : Math.floor(n / 3))));
        for (const counts of countsList) {
          const cs = counts ?? evenCounts(n, W);
          const start = cs.slice(0, r).reduce((a, b) => a + b, 0);
          const out = await comm.reduceScatter(make(dt, Array.from({ length: n }, (_, i) => value(dt, r, i, 1))), op, counts);
          check(`reduceScatter ${dt} ${op} n=${n} counts=${counts ? cs.join('/') : 'even'}`, out, full.slice(start, start + cs[r]!));
        }
      }
    }
    // allGather: lengths that differ between ranks, including an empty contribution.
    for (const lengthOf of [(q: number) => q + 1, (q: number) => (q === 1 ? 0 : L + q), () => 0]) {
      const mine = make(dt, Array.from({ length: lengthOf(r) }, (_, i) => value(dt, r, i, 2)));
      const out = await comm.allGather(mine);
      const want = ranks.flatMap((q) => Array.from({ length: lengthOf(q) }, (_, i) => value(dt, q, i, 2)));
      check(`allGather ${dt} lengths=${ranks.map(lengthOf).join('/')}`, out, want);
    }
    // broadcast from every root; the other ranks start with different contents.
    for (const root of ranks) {
      for (const n of [1, L]) {
        const buf = make(dt, Array.from({ length: n }, (_, i) => value(dt, r, i, 3 + root)));
        const out = await comm.broadcast(buf, root);
        check(`broadcast ${dt} root=${root} n=${n}`, out, Array.from({ length: n }, (_, i) => value(dt, root, i, 3 + root)));
        if (out !== buf) checks.push({ name: `broadcast ${dt} root=${root} in place`, ok: false, why: 'returned a different array', digest: '' });
      }
    }
  }

  // NaN and infinities propagate through sum and max (as MPI_MAX on IEEE values and torch.max do), whichever rank holds them.
  for (const dt of ['float32', 'float64', 'float16'] as const) {
    for (const op of ['sum', 'max'] as const) {
      const local = [1 + r, r === W - 1 ? NaN : 2, r === 0 ? Infinity : -1, r === 0 ? NaN : 3, r === W - 1 ? -Infinity : 0.5];
      const out = await comm.allReduce(make(dt, local), op);
      const all = ranks.map((q) => [1 + q, q === W - 1 ? NaN : 2, q === 0 ? Infinity : -1, q === 0 ? NaN : 3, q === W - 1 ? -Infinity : 0.5]);
      const want = local.map((_, i) => {
        const xs = all.map((row) => row[i]!);
        if (op === 'sum' && xs.includes(Infinity) && xs.includes(-Infinity)) return NaN;
        return reduce(op, xs);
      });
      check(`allReduce ${dt} ${op} NaN/Inf`, out, want);
    }
  }

  // int32 sums wrap modulo 2^32, as MPI_INT does.
  const wrap = await comm.allReduce(new Int32Array([r === 0 ? 2147483647 : 1, -2147483648 + (r === 0 ? 0 : 0)]), 'sum');
  check('allReduce int32 sum wraps', wrap, [(2147483647 + (W - 1)) | 0, (-2147483648 * W) | 0]);

  // barrier: no rank may leave before the last one entered. Rank q enters BARRIER_STAGGER_MS * q late, so a barrier
  // that returns early is caught on rank 0: it would leave about (W - 1) * BARRIER_STAGGER_MS before rank W - 1
  // enters. The times are wall-clock milliseconds compared across ranks (see the note on runConformance).
  await new Promise((resolve) => setTimeout(resolve, BARRIER_STAGGER_MS * r));
  const enteredAt = Date.now();
  await comm.barrier();
  const leftAt = Date.now();
  const entered = read(await comm.allGather(Float64Array.of(enteredAt)));
  const last = entered.indexOf(Math.max(...entered));
  const early = leftAt < entered[last]!;
  checks.push({ name: 'barrier', ok: !early, why: early ? `rank ${r} left at ${leftAt} ms, before rank ${last} entered at ${entered[last]} ms (Date.now())` : undefined, digest: '' });
  return { rank: r, worldSize: W, backend: comm.backend, checks };
}
