import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PfcError, initBackend } from '@pfc/core';
import { runLocal } from '@pfc/collective';
import { PartialFC, type PartialFCOptions } from './partial-fc';
import { makeProblem, maxAbsDiff } from './testing.test-util';

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

const C = 23;
const d = 6;
const p = makeProblem(C, d, 6, 31);
const base = { numClasses: C, embeddingSize: d, margin: { s: 64, m1: 1, m2: 0.5, m3: 0 }, seed: 2 };
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pfc-bank-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Full [C, d] weights and momentum gathered from every rank. */
async function snapshot(W: number, opts: Partial<PartialFCOptions>, fn: (pfc: PartialFC, rank: number) => Promise<void>) {
  const parts = await runLocal(W, async (comm) => {
    const pfc = new PartialFC({ ...base, ...opts, comm });
    await fn(pfc, comm.rank);
    return { w: pfc.getWeights(), m: pfc.getMomentum(), step: pfc.stepCount };
  });
  return {
    w: Float64Array.from(parts.flatMap((x) => Array.from(x.w))),
    m: Float64Array.from(parts.flatMap((x) => Array.from(x.m))),
    steps: parts.map((x) => x.step),
  };
}

const step = async (pfc: PartialFC, rank: number, W: number) => {
  const B = 6 / W;
  return pfc.forwardBackward(Float32Array.from(p.emb.subarray(rank * B * d, (rank + 1) * B * d)), p.labels.subarray(rank * B, (rank + 1) * B), { lr: 0.05 });
};

describe('bank checkpoints', () => {
  it('a bank saved with 2 ranks loads with 3 and 1 ranks, and training continues identically', async () => {
    const saved = await snapshot(2, {}, async (pfc, r) => {
      for (let i = 0; i < 3; i++) await step(pfc, r, 2);
      await pfc.save(dir);
    });
    expect(saved.steps).toEqual([3, 3]);
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    expect(manifest).toMatchObject({ numClasses: C, embeddingSize: d, storage: 'float32', step: 3, worldSize: 2 });
    expect(manifest.shards.map((s: { classStart: number }) => s.classStart)).toEqual([0, 12]);
    for (const W of [3, 1]) {
      const loaded = await snapshot(W, { init: 'zeros' }, async (pfc) => {
        await pfc.load(dir);
      });
      expect(maxAbsDiff(loaded.w, saved.w)).toBe(0);
      expect(maxAbsDiff(loaded.m, saved.m)).toBe(0);
      expect(loaded.steps.every((s) => s === 3)).toBe(true);
    }
    // one more step from the checkpoint: 2 ranks (original) vs 3 ranks (resharded)
    const cont = async (W: number) =>
      runLocal(W, async (comm) => {
        const pfc = new PartialFC({ ...base, comm, init: 'zeros' });
        await pfc.load(dir);
        return (await step(pfc, comm.rank, W)).loss;
      });
    const [l2] = await cont(2);
    const [l3] = await cont(3);
    expect(Math.abs(l2! - l3!)).toBeLessThan(1e-5);
  });

  it('converts storage on load (float16 saved, float32 loaded) and keeps files atomic', async () => {
    const saved = await snapshot(1, { storage: 'float16' }, async (pfc) => {
      await step(pfc, 0, 1);
      await pfc.save(dir);
    });
    const loaded = await snapshot(2, { storage: 'float32', init: 'zeros' }, async (pfc) => {
      await pfc.load(dir);
    });
    expect(maxAbsDiff(loaded.w, saved.w)).toBe(0); // fp16 values are exact in float32
    expect(maxAbsDiff(loaded.m, saved.m)).toBe(0);
    const leftovers = require('node:fs').readdirSync(dir).filter((f: string) => f.endsWith('.tmp'));
    expect(leftovers).toEqual([]);
  });

  it('a save that fails after writing its shards leaves the previous checkpoint whole; a finished save prunes old shards', async () => {
    const atStep1 = await snapshot(2, {}, async (pfc, r) => {
      await step(pfc, r, 2);
      await pfc.save(dir);
    });
    const filesAt1 = readdirSync(dir).sort();
    // same ranks, one more step, then a save whose collective fails after every rank wrote its shard files
    await expect(
      runLocal(2, async (comm) => {
        const pfc = new PartialFC({ ...base, comm, init: 'zeros' });
        await pfc.load(dir);
        await step(pfc, comm.rank, 2);
        const failing = Object.create(comm, { allGather: { value: async () => Promise.reject(new Error('rank lost')) } });
        (pfc as { comm: unknown }).comm = failing;
        await pfc.save(dir);
      }),
    ).rejects.toThrow('rank lost');
    expect(readdirSync(dir).filter((f) => f.includes('-step2')).length).toBe(4); // the new shards are there...
    const loaded = await snapshot(2, { init: 'zeros' }, (pfc) => pfc.load(dir).then(() => undefined));
    expect(loaded.steps).toEqual([1, 1]); // ...but the manifest still names step 1's, unchanged
    expect(maxAbsDiff(loaded.w, atStep1.w)).toBe(0);
    expect(maxAbsDiff(loaded.m, atStep1.m)).toBe(0);
    // a save that completes replaces the manifest and removes every shard file it does not name
    await snapshot(2, { init: 'zeros' }, async (pfc, r) => {
      await pfc.load(dir);
      await step(pfc, r, 2);
      await pfc.save(dir);
    });
    const after = readdirSync(dir).sort();
    expect(after.filter((f) => filesAt1.includes(f) && f !== 'manifest.json')).toEqual([]);
    expect(after).toEqual(['manifest.json', ...JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')).shards.flatMap((s: { weight: string; momentum: string }) => [s.momentum, s.weight])].sort());
  });

  it('E_CHECKPOINT for another numClasses or embeddingSize, a missing manifest or a truncated shard', async () => {
    await snapshot(1, {}, (pfc) => pfc.save(dir));
    const load = (opts: Partial<PartialFCOptions>, W = 1) =>
      runLocal(W, async (comm) => {
        await new PartialFC({ ...base, ...opts, comm, init: 'zeros' }).load(dir);
      });
    const code = async (pr: Promise<unknown>, re: RegExp) => {
      const err = await pr.then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(PfcError);
      expect((err as PfcError).code).toBe('E_CHECKPOINT');
      expect((err as PfcError).message).toMatch(re);
    };
    await code(load({ numClasses: C + 1 }), /numClasses 23 × embeddingSize 6, this PartialFC has 24 × 6/);
    await code(load({ embeddingSize: d + 1 }), /embeddingSize/);
    const shard = join(dir, JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')).shards[0].weight);
    writeFileSync(shard, readFileSync(shard).subarray(0, 200));
    await code(load({}), /truncated/);
    rmSync(join(dir, 'manifest.json'));
    expect(existsSync(join(dir, 'manifest.json'))).toBe(false);
    await code(load({}), /manifest.json is missing/);
  });
});
