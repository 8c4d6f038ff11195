import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import { runLocal } from './local';
import { runThreads } from './launch';
import { runConformance, type ConformanceReport } from './conformance';

const ranks = join(__dirname, '__fixtures__', 'ranks.ts');

describe('runThreads / ThreadsCommunicator', () => {
  it('runs an exported function on N worker ranks and returns results in rank order', async () => {
    await expect(runThreads(3, { module: ranks, export: 'sumRanks' })).resolves.toEqual([
      [3, 3],
      [3, 3],
      [3, 3],
    ]);
    const ids = await runThreads<{ rank: number; same: boolean; backend: string }>(2, { module: ranks, export: 'identity' });
    expect(ids).toEqual([
      { rank: 0, same: true, backend: 'threads' },
      { rank: 1, same: true, backend: 'threads' },
    ]);
  });

  it.each([1, 2, 3])('passes the conformance suite with %i rank(s), chunked through a 4 KiB slot, identically to local', async (n) => {
    const options = { large: 5000 };
    const threads = await runThreads<ConformanceReport>(n, { module: ranks, export: 'conformance', args: options, slotBytes: 4096 });
    const local = await runLocal(n, (c) => runConformance(c, options));
    for (const rep of threads) {
      expect(rep.checks.filter((c) => !c.ok)).toEqual([]);
      expect(rep.backend).toBe('threads');
    }
    expect(threads.map((r) => r.checks.map((c) => c.digest))).toEqual(local.map((r) => r.checks.map((c) => c.digest)));
  });

  it("'block' wait mode passes the suite too", async () => {
    const out = await runThreads<ConformanceReport>(2, { module: ranks, export: 'conformance', args: { large: 700 }, slotBytes: 1024, wait: 'block' });
    for (const rep of out) expect(rep.checks.filter((c) => !c.ok)).toEqual([]);
  });

  it('keeps the event loop of a waiting rank running (async wait)', async () => {
    const [ticks0] = await runThreads<number>(2, { module: ranks, export: 'responsive' });
    expect(ticks0).toBeGreaterThan(5);
  });

  it('a rank that throws makes the launcher reject with E_RANK_FAILED naming it', async () => {
    const err = await runThreads(3, { module: ranks, export: 'failing', args: { bad: 1, how: 'throw' }, timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PfcError);
    expect(err).toMatchObject({ code: 'E_RANK_FAILED', message: expect.stringContaining('rank 1 failed: Error: boom'), details: { rank: 1 } });
  });

  it("a rank's PfcError keeps its code and gains details.rank", async () => {
    await expect(runThreads(2, { module: ranks, export: 'failing', args: { bad: 0, how: 'pfc' }, timeoutMs: 5000 })).rejects.toMatchObject({
      code: 'E_LABEL_RANGE',
      details: { rank: 0 },
    });
  });

  it.each(['exit', 'uncaught'] as const)('a rank that dies (%s) fails the others promptly, nothing hangs', async (how) => {
    const err = await runThreads(3, { module: ranks, export: 'failing', args: { bad: 2, how }, timeoutMs: 20_000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_RANK_FAILED', details: { rank: 2 } });
    expect((err as Error).message).toMatch(/rank 2 (exited with code 3|died of an uncaught error: uncaught boom)/);
  });

  it('a rank that never joins gives E_COLLECTIVE_TIMEOUT naming it, and the launcher terminates it', async () => {
    const err = await runThreads(2, { module: ranks, export: 'failing', args: { bad: 1, how: 'hang' }, timeoutMs: 3000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_COLLECTIVE_TIMEOUT', message: expect.stringMatching(/rank\(s\) 1 did not join within 3000 ms/) });
  });

  it('mismatched calls give E_COLLECTIVE_MISMATCH on every rank', async () => {
    await expect(runThreads(3, { module: ranks, export: 'mismatch', timeoutMs: 5000 })).rejects.toMatchObject({
      code: 'E_COLLECTIVE_MISMATCH',
      message: expect.stringContaining('rank 0 passed 2 elements but rank 1 passed 3'),
    });
  });

  it('rejects bad arguments', async () => {
    await expect(runThreads(0, { module: ranks })).rejects.toMatchObject({ code: 'E_WORLD_SIZE' });
    await expect(runThreads(1, { module: ranks, export: 'nope' })).rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringContaining("no exported function 'nope'") });
    await expect(runThreads(1, { module: ranks, slotBytes: 12 })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });
});
