import { Rng, assertArg } from '@pfc/core';

export interface DistributedSamplerOptions {
  /** Number of ranks W (default 1). */
  numReplicas?: number;
  /** This rank, 0…W−1 (default 0). */
  rank?: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  /** Seed shared by all ranks; epoch e uses a permutation seeded by `seed + e` (default 0). */
  seed?: number;
  /** Drop the tail so every rank gets the same count without padding (default false, as PyTorch). */
  dropLast?: boolean;
}

/**
 * PyTorch's `DistributedSampler` (and arcface_torch's copy): each epoch a permutation of all `length` indices
 * (generator seeded with `seed + epoch`), padded by repeating its head to a multiple of W (or truncated when
 * `dropLast`), and rank r takes positions r, r+W, r+2W, … — so ranks get disjoint slices of equal size.
 * The permutation comes from @pfc/core's `Rng`, not torch's generator: the same structure, not the same order.
 */
export class DistributedSampler {
  readonly length: number;
  readonly numReplicas: number;
  readonly rank: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  /** Indices per rank per epoch. */
  readonly numSamples: number;
  /** `numSamples × numReplicas`. */
  readonly totalSize: number;

  constructor(length: number, options: DistributedSamplerOptions = {}) {
    const W = options.numReplicas ?? 1;
    const rank = options.rank ?? 0;
    assertArg(Number.isInteger(length) && length > 0, 'DistributedSampler', 'length', length, 'a positive integer');
    assertArg(Number.isInteger(W) && W >= 1, 'DistributedSampler', 'numReplicas', W, 'a positive integer');
    assertArg(Number.isInteger(rank) && rank >= 0 && rank < W, 'DistributedSampler', 'rank', rank, `an integer in [0, ${W})`);
    this.length = length;
    this.numReplicas = W;
    this.rank = rank;
    this.shuffle = options.shuffle ?? true;
    this.seed = options.seed ?? 0;
    this.dropLast = options.dropLast ?? false;
    this.numSamples = this.dropLast && length % W !== 0 ? Math.ceil((length - W) / W) : Math.ceil(length / W);
    assertArg(this.numSamples > 0, 'DistributedSampler', 'length', length, `at least numReplicas (${W}) when dropLast`);
    this.totalSize = this.numSamples * W;
  }

  /** This rank's dataset indices for `epoch` (int32, length `numSamples`). */
  indices(epoch: number): Int32Array {
    assertArg(Number.isInteger(epoch) && epoch >= 0, 'DistributedSampler.indices', 'epoch', epoch, 'a non-negative integer');
    const n = this.length;
    let all: Int32Array;
    if (this.shuffle) all = new Rng(this.seed + epoch).permutation(n);
    else {
      all = new Int32Array(n);
      for (let i = 0; i < n; i++) all[i] = i;
    }
    const full = new Int32Array(this.totalSize);
    // padding repeats the list from its start as many times as needed (PyTorch's `indices * ceil(pad/len)`)
    for (let i = 0; i < this.totalSize; i++) full[i] = all[i % n]!;
    const out = new Int32Array(this.numSamples);
    for (let i = 0; i < this.numSamples; i++) out[i] = full[this.rank + i * this.numReplicas]!;
    return out;
  }
}
