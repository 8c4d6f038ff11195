import { mpiReady, runMpiMain } from './__fixtures__/mpirun';

const withMpi = mpiReady ? it : it.skip;

describe('MPI rank killed mid-run', () => {
  withMpi('kill -9 of one rank ends the job with a clear error within the collective timeout; nothing hangs', async () => {
    const timeoutMs = 10_000;
    const run = await runMpiMain(3, 'kill', timeoutMs, 60_000);
    // mpirun notices the dead process and terminates the job; if it did not, the survivors' collectives time out
    // (E_COLLECTIVE_TIMEOUT) and they call MPI_Abort. Either way the job ends with an error by itself: the test kills mpirun only after 60 s (signal set = it hung).
    expect(run.signal).toBeNull();
    expect(run.code).not.toBe(0);
    expect(run.output).toMatch(/exited on signal 9|E_COLLECTIVE_TIMEOUT|MPI_ABORT/);
  });

  withMpi('a rank that stops calling collectives makes the others fail with E_COLLECTIVE_TIMEOUT and end the job (MPI_Abort)', async () => {
    const run = await runMpiMain(3, 'stall', 3000, 60_000);
    expect(run.signal).toBeNull();
    expect(run.code).not.toBe(0);
    expect(run.output).toMatch(/E_COLLECTIVE_TIMEOUT: mpi allReduce: rank [02] waited 3000 ms/);
    // mpirun's own "MPI_ABORT was invoked" notice is sometimes garbled when two ranks abort at once; the exit code is what counts.
  });
});
