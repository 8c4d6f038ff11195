import { PfcError } from '@pfc/core';
import { runConformance, type ConformanceReport } from './conformance';
import { createCommunicator } from './factory';
import { runLocal } from './local';
import { loadAddon, MPI_INSTALL_HINT } from './native';
import { mpiReady, runMpiMain } from './__fixtures__/mpirun';

const withMpi = mpiReady ? it : it.skip;

describe('MpiCommunicator', () => {
  withMpi.each([2, 3])('passes the conformance suite on %i mpirun processes, with the same results as local', async (np) => {
    const run = await runMpiMain(np, 'conformance', 60_000);
    expect(run.code).toBe(0);
    const reports = run.results as (ConformanceReport & { ticksInBarrier: number })[];
    // The event loop of a rank waiting in MPI keeps running (collectives run on the libuv thread pool).
    expect(reports[0]!.ticksInBarrier).toBeGreaterThan(5);
    expect(reports.map((r) => r.rank)).toEqual(Array.from({ length: np }, (_, r) => r));
    for (const rep of reports) {
      expect(rep.backend).toBe('mpi');
      expect(rep.checks.filter((c) => !c.ok)).toEqual([]);
    }
    const local = await runLocal(np, (c) => runConformance(c, { large: 5000 }));
    expect(reports.map((r) => r.checks.map((c) => `${c.name} ${c.digest}`))).toEqual(local.map((r) => r.checks.map((c) => `${c.name} ${c.digest}`)));
  });

  withMpi('mismatched calls fail with E_COLLECTIVE_MISMATCH instead of undefined behaviour', async () => {
    const run = await runMpiMain(2, 'mismatch', 20_000);
    expect(run.code).not.toBe(0);
    expect(run.output).toContain('E_COLLECTIVE_MISMATCH: mpi allReduce: rank 0 passed 2 elements but rank 1 passed 3');
  });

  withMpi('a rank that closes because of an error while the others are in a collective does not hang the job', async () => {
    const run = await runMpiMain(3, 'close-on-error', 60_000, 60_000);
    expect(run.signal).toBeNull();
    expect(run.code).not.toBe(0);
    // Rank 1 reports its error; the others see its closing barrier against their allReduce. Whichever rank fails
    // first calls MPI_Abort, which kills every process, so only one of the reports may get out.
    expect(run.output).toMatch(/rank 1: Error : rank 1 data error|E_COLLECTIVE_MISMATCH: mpi (allReduce|barrier): rank 0 called allReduce but rank 1 called barrier/);
  });

  it('asking for MPI outside mpirun gives E_BACKEND_UNAVAILABLE saying how to launch', async () => {
    await expect(createCommunicator({ backend: 'mpi', env: {} })).rejects.toMatchObject({
      code: 'E_BACKEND_UNAVAILABLE',
      message: expect.stringContaining('mpirun -np <N> node <script>'),
    });
  });

  it('a binding that is not built gives E_BACKEND_UNAVAILABLE with the install hint', () => {
    let err: unknown;
    try {
      loadAddon('pfc_missing' as never, 'mpi', MPI_INSTALL_HINT);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PfcError);
    expect(err).toMatchObject({ code: 'E_BACKEND_UNAVAILABLE', message: expect.stringContaining('apt-get install libopenmpi-dev openmpi-bin') });
    expect((err as Error).message).toContain('pfc_missing.node is not built');
  });
});
