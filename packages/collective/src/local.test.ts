import { PfcError, toFloat16Bits, fromFloat16Bits } from '@pfc/core';
import { runConformance } from './conformance';
import { runLocal, createLocalGroup } from './local';

describe('LocalCommunicator', () => {
  it('allReduce sum/max, allGather uneven, reduceScatter, broadcast, barrier on 3 ranks', async () => {
    const out = await runLocal(3, async (c) => {
      const s = await c.allReduce(new Float64Array([c.rank, 1, -c.rank]), 'sum');
      const m = await c.allReduce(new Int32Array([c.rank, -c.rank]), 'max');
      const g = await c.allGather(new Float32Array(c.rank + 1).fill(c.rank));
      const rs = await c.reduceScatter(new Float32Array([1, 2, 3, 4, 5, 6, 7]).map((v) => v * (c.rank + 1)), 'sum');
      const b = await c.broadcast(new Int32Array([c.rank, c.rank]), 2);
      const h = await c.allReduce(new Uint16Array([toFloat16Bits(0.5 * (c.rank + 1))]), 'sum');
      await c.barrier();
      return { s: [...s], m: [...m], g: [...g], rs: [...rs], b: [...b], h: fromFloat16Bits(h[0]!) };
    });
    for (const o of out) {
      expect(o.s).toEqual([3, 3, -3]);
      expect(o.m).toEqual([2, 0]);
      expect(o.g).toEqual([0, 1, 1, 2, 2, 2]);
      expect(o.b).toEqual([2, 2]);
      expect(o.h).toBe(3);
    }
    expect(out.map((o) => o.rs)).toEqual([[6, 12, 18], [24, 30], [36, 42]]);
  });

  it.each([1, 2, 3])('passes the conformance suite with %i rank(s)', async (n) => {
    const reports = await runLocal(n, (c) => runConformance(c, { large: 700 }));
    for (const rep of reports) {
      expect(rep.backend).toBe('local');
      expect(rep.checks.map((c) => c.name)).toContain('barrier');
      expect(rep.checks.filter((c) => !c.ok)).toEqual([]);
    }
  });

  it('a rank that throws makes the others fail with E_RANK_FAILED, nothing hangs', async () => {
    await expect(
      runLocal(3, async (c) => {
        if (c.rank === 1) throw new Error('boom');
        await c.barrier();
        return c.rank;
      }),
    ).rejects.toThrow('boom');
  });

  it('a rank that never joins gives E_COLLECTIVE_TIMEOUT naming it', async () => {
    const [a] = createLocalGroup(2, { timeoutMs: 50 });
    await expect(a!.barrier()).rejects.toMatchObject({ code: 'E_COLLECTIVE_TIMEOUT', message: expect.stringMatching(/rank\(s\) 1 /) });
  });

  it('mismatched calls give E_COLLECTIVE_MISMATCH', async () => {
    const p = runLocal(2, async (c) => (c.rank === 0 ? c.allReduce(new Float32Array(2)) : c.allReduce(new Float32Array(3))));
    await expect(p).rejects.toBeInstanceOf(PfcError);
    await expect(runLocal(2, async (c) => (c.rank === 0 ? c.allReduce(new Float32Array(2)) : c.barrier()))).rejects.toMatchObject({
      code: 'E_COLLECTIVE_MISMATCH',
    });
  });
});
