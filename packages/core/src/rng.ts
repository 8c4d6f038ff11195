import { PfcError } from './errors';

/** The serialisable state of an {@link Rng}: four uint32 words of xoshiro128** plus the cached normal. */
export interface RngState {
  s: [number, number, number, number];
  spare: number | null;
}

function splitmix32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x9e3779b9) >>> 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

function hashString(label: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

/**
 * Seeded pseudo-random generator (xoshiro128**, seeded through splitmix32). Every source of randomness in @pfc
 * takes one, so a run is reproducible from its seed, and its state can be saved in a checkpoint and restored.
 */
export class Rng {
  private s = new Uint32Array(4);
  private spare: number | null = null;

  /** @param seed any integer; equal seeds give equal streams. */
  constructor(seed: number = 0) {
    if (!Number.isFinite(seed)) {
      throw new PfcError('E_ARGUMENT', `Rng: argument 'seed' must be a finite number, got ${seed}`);
    }
    const hi = Math.floor(seed / 2 ** 32);
    const sm = splitmix32((seed >>> 0) ^ Math.imul(hi >>> 0, 0x9e3779b1));
    for (let i = 0; i < 4; i++) this.s[i] = sm();
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) this.s[0] = 1;
  }

  /** A new generator whose stream depends on this one's seed state and `label`, leaving this one untouched. */
  fork(label: string | number): Rng {
    const child = new Rng(0);
    const h = typeof label === 'number' ? label >>> 0 : hashString(label);
    const sm = splitmix32(h ^ this.s[0]! ^ Math.imul(this.s[1]!, 0x27d4eb2d) ^ this.s[2]! ^ this.s[3]!);
    for (let i = 0; i < 4; i++) child.s[i] = (sm() ^ this.s[(i + 1) & 3]!) >>> 0;
    if ((child.s[0]! | child.s[1]! | child.s[2]! | child.s[3]!) === 0) child.s[0] = 1;
    return child;
  }

  /** Next raw uint32. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  uniform(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) {
      throw new PfcError('E_ARGUMENT', `Rng.int: argument 'n' must be a positive integer, got ${n}`);
    }
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal sample (Marsaglia polar method). */
  normal(mean = 0, std = 1): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return mean + std * v;
    }
    let u: number, v: number, q: number;
    do {
      u = 2 * this.uniform() - 1;
      v = 2 * this.uniform() - 1;
      q = u * u + v * v;
    } while (q >= 1 || q === 0);
    const f = Math.sqrt((-2 * Math.log(q)) / q);
    this.spare = v * f;
    return mean + std * u * f;
  }

  /** Fills `out` with uniform values in [lo, hi). */
  fillUniform<T extends Float32Array | Float64Array>(out: T, lo = 0, hi = 1): T {
    const w = hi - lo;
    for (let i = 0; i < out.length; i++) out[i] = lo + w * this.uniform();
    return out;
  }

  /** Fills `out` with normal values. */
  fillNormal<T extends Float32Array | Float64Array>(out: T, mean = 0, std = 1): T {
    for (let i = 0; i < out.length; i++) out[i] = this.normal(mean, std);
    return out;
  }

  /** A uniformly random permutation of 0..n-1 (Fisher–Yates). */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    this.shuffle(p);
    return p;
  }

  /** Shuffles `arr` in place (Fisher–Yates) and returns it. */
  shuffle<T extends { length: number; [i: number]: unknown }>(arr: T): T {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = Math.floor(this.uniform() * (i + 1));
      const t = arr[i];
      arr[i] = arr[j];
      arr[j] = t;
    }
    return arr;
  }

  /** The generator's state, to store in a checkpoint. */
  getState(): RngState {
    return { s: [this.s[0]!, this.s[1]!, this.s[2]!, this.s[3]!], spare: this.spare };
  }

  /** Restores a state from {@link getState}. */
  setState(state: RngState): void {
    if (!state || !Array.isArray(state.s) || state.s.length !== 4) {
      throw new PfcError('E_ARGUMENT', `Rng.setState: argument 'state' must be an RngState with 4 words`);
    }
    for (let i = 0; i < 4; i++) this.s[i] = state.s[i]! >>> 0;
    this.spare = state.spare ?? null;
  }

  /** Restores a generator from a saved state. */
  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
