import { Rng } from '@pfc/core';
import { forcedCenters, localizeLabels, remapLabels, sampleCenters, topKSorted } from './sampling';
import { numSampleOf, shardOf } from './sharding';

describe('sharding (peer-semantics §1)', () => {
  it('matches the worked examples of the spec', () => {
    const ms1mv3 = Array.from({ length: 8 }, (_, r) => shardOf(93431, 8, r));
    expect(ms1mv3.map((s) => s.numLocal)).toEqual([11679, 11679, 11679, 11679, 11679, 11679, 11679, 11678]);
    expect(ms1mv3[7]!.classStart).toBe(93431 - 11678);
    const ms1mv2 = Array.from({ length: 8 }, (_, r) => shardOf(85742, 8, r).numLocal);
    expect(ms1mv2).toEqual([10718, 10718, 10718, 10718, 10718, 10718, 10717, 10717]);
    expect(shardOf(2059906, 32, 1).numLocal).toBe(64373);
    expect(shardOf(2059906, 32, 2).numLocal).toBe(64372);
    expect(numSampleOf(0.1, 11679)).toBe(1167);
    expect(numSampleOf(1, 11679)).toBe(11679);
  });
  it('rejects bad arguments', () => {
    expect(() => shardOf(10, 2, 2)).toThrow(/rank/);
    expect(() => shardOf(0, 2, 0)).toThrow(/numClasses/);
  });
});

describe('sampling (peer-semantics §3)', () => {
  it('topKSorted equals sort-descending-take-k-sort-ascending', () => {
    const rng = new Rng(1);
    for (const [n, k] of [[1, 1], [10, 3], [1000, 100], [1000, 999], [5, 0]] as const) {
      const keys = rng.fillUniform(new Float64Array(n));
      const brute = Array.from(keys.keys())
        .sort((a, b) => keys[b]! - keys[a]!)
        .slice(0, k)
        .sort((a, b) => a - b);
      expect(Array.from(topKSorted(keys, k))).toEqual(brute);
    }
    expect(Array.from(topKSorted(Float64Array.of(0.5, 0.5, 0.5, 0.1), 2))).toEqual([0, 1]); // ties keep low ids
  });

  it('forces positives in, fills with the top keys, sorts, and remaps labels by position', () => {
    const labels = Int32Array.of(12, 3, 40, 12, 19, 7);
    const local = localizeLabels(labels, 10, 20); // shard [10, 30)
    expect(Array.from(local)).toEqual([2, -1, -1, 2, 9, -1]);
    const keys = Float64Array.from({ length: 20 }, (_, i) => (i * 7919) % 20 / 20);
    const s = sampleCenters(local, 20, 5, { keys });
    const forced = Float64Array.from(keys);
    forced[2] = 2;
    forced[9] = 2;
    expect(Array.from(s.index!)).toEqual(Array.from(topKSorted(forced, 5)));
    expect(s.index).toContain(2);
    expect(s.index).toContain(9);
    for (let i = 0; i < local.length; i++) {
      if (local[i]! < 0) expect(s.labels[i]).toBe(-1);
      else expect(s.index![s.labels[i]!]).toBe(local[i]);
    }
    expect(s.positivesOnly).toBe(false);
  });

  it('uses exactly the positives when there are more than numSample, without drawing keys', () => {
    const local = Int32Array.of(5, 1, -1, 5, 3);
    const rng = new Rng(3);
    const before = rng.getState();
    const s = sampleCenters(local, 10, 2, { rng });
    expect(Array.from(s.index!)).toEqual([1, 3, 5]);
    expect(Array.from(s.labels)).toEqual([2, 0, -1, 2, 1]);
    expect(s.positivesOnly).toBe(true);
    expect(rng.getState()).toEqual(before);
  });

  it('draws one uniform key per local class from the generator', () => {
    const rng = new Rng(9);
    const s = sampleCenters(Int32Array.of(-1, 4), 100, 10, { rng: rng.fork(0) });
    const keys = new Float64Array(100);
    const r2 = rng.fork(0);
    for (let i = 0; i < 100; i++) keys[i] = r2.uniform();
    keys[4] = 2;
    expect(Array.from(s.index!)).toEqual(Array.from(topKSorted(keys, 10)));
    expect(() => sampleCenters(Int32Array.of(1), 10, 3, { keys: new Float64Array(9) })).toThrow(/numLocal = 10/);
  });

  it('forcedCenters keeps the ids of this shard and remaps', () => {
    const s = forcedCenters(Int32Array.of(0, -1, 3), [105, 100, 103, 250], 100, 10);
    expect(Array.from(s.index!)).toEqual([0, 3, 5]);
    expect(Array.from(s.labels)).toEqual([0, -1, 1]);
    expect(Array.from(remapLabels(Int32Array.of(5, -1), Int32Array.of(1, 5)))).toEqual([1, -1]);
  });
});
