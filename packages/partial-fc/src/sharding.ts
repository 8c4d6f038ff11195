import { assertArg } from '@pfc/core';

/** The contiguous block of classes one rank owns. */
export interface Shard {
  /** Number of classes of this rank (`C_r`). */
  numLocal: number;
  /** First global class id of this rank (`c_r`). */
  classStart: number;
}

/**
 * The class shard of `rank` among `worldSize` ranks, as the reference: the first `C mod W` ranks own one extra class.
 * `numLocal = floor(C/W) + (r < C mod W ? 1 : 0)`, `classStart = floor(C/W)·r + min(r, C mod W)`.
 */
export function shardOf(numClasses: number, worldSize: number, rank: number): Shard {
  assertArg(Number.isInteger(numClasses) && numClasses >= 1, 'shardOf', 'numClasses', numClasses, 'a positive integer');
  assertArg(Number.isInteger(worldSize) && worldSize >= 1, 'shardOf', 'worldSize', worldSize, 'a positive integer');
  assertArg(Number.isInteger(rank) && rank >= 0 && rank < worldSize, 'shardOf', 'rank', rank, `an integer in [0, ${worldSize})`);
  const base = Math.floor(numClasses / worldSize);
  const rem = numClasses % worldSize;
  return { numLocal: base + (rank < rem ? 1 : 0), classStart: base * rank + Math.min(rank, rem) };
}

/**
 * Number of class centers a shard samples per step: `floor(sampleRate · numLocal)`; `sampleRate = 1` keeps all.
 */
export function numSampleOf(sampleRate: number, numLocal: number): number {
  return sampleRate >= 1 ? numLocal : Math.floor(sampleRate * numLocal);
}
