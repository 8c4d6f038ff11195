/**
 * A program the MPI tests start under mpirun: `mpi-main.ts conformance|kill|stall|close-on-error|info|mismatch|nccl-unavailable <timeoutMs> <outDir>`.
 * Each rank writes `<outDir>/rank-<r>.json` (mpirun splits long stdout lines of different ranks).
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runConformance } from '../conformance';
import type { Communicator } from '../communicator';
import { createCommunicator, runRank } from '../factory';

async function main(mode: string, timeoutMs: number, outDir: string): Promise<void> {
  if (mode === 'nccl-unavailable') {
    // The NCCL backend under mpirun on a machine without NCCL: what each rank is told.
    const err = (await createCommunicator({ backend: 'nccl', timeoutMs }).catch((e: unknown) => e)) as { code?: string; message?: string };
    writeFileSync(join(outDir, `rank-${process.env.OMPI_COMM_WORLD_RANK ?? 0}.json`), JSON.stringify({ code: err.code, message: err.message }));
    return;
  }
  await runRank(
    async (comm: Communicator) => {
      if (mode === 'conformance') {
        const report = await runConformance(comm, { large: 5000 });
        // While rank 0 waits in a barrier for rank 1 (which sleeps 300 ms), rank 0's timers keep firing.
        let ticks = 0;
        const t = setInterval(() => ticks++, 10);
        if (comm.rank === 1) await new Promise((r) => setTimeout(r, 300));
        await comm.barrier();
        clearInterval(t);
        writeFileSync(join(outDir, `rank-${comm.rank}.json`), JSON.stringify({ ...report, ticksInBarrier: ticks }));
      } else if (mode === 'info') {
        writeFileSync(join(outDir, `rank-${comm.rank}.json`), JSON.stringify({ rank: comm.rank, worldSize: comm.worldSize, backend: comm.backend }));
      } else if (mode === 'kill') {
        // Rank 1 is killed (SIGKILL, no cleanup) in the middle of a run of collectives; it first records when, so
        // that the test can time the survivors' failure from the kill rather than from the job's start.
        for (let step = 0; step < 1_000_000; step++) {
          if (comm.rank === 1 && step === 50) {
            writeFileSync(join(outDir, `rank-${comm.rank}.json`), JSON.stringify({ rank: comm.rank, killedAt: Date.now() }));
            process.kill(process.pid, 'SIGKILL');
          }
          await comm.allReduce(new Float32Array(1024).fill(1), 'sum');
        }
      } else if (mode === 'stall') {
        // Rank 1 stops calling collectives (alive, busy elsewhere): the others must time out, not hang.
        await comm.barrier();
        if (comm.rank === 1) await new Promise((r) => setTimeout(r, 600_000));
        await comm.allReduce(new Float32Array(4));
      } else if (mode === 'close-on-error') {
        // The pattern `try { train } finally { await comm.close() }`: rank 1 fails outside any collective and closes
        // while the others are in an allReduce; nobody may wait forever in MPI_Finalize.
        try {
          if (comm.rank === 1) throw new Error('rank 1 data error');
          for (let i = 0; i < 3; i++) await comm.allReduce(new Float32Array(4));
        } finally {
          await comm.close();
        }
      } else if (mode === 'mismatch') {
        await comm.allReduce(new Float32Array(comm.rank === 0 ? 2 : 3));
      }
    },
    {
      timeoutMs,
      onError: (err, comm) => {
        const failedAt = Date.now();
        const code = (err as { code?: string }).code;
        process.stderr.write(`rank ${comm.rank}: ${(err as Error).name} ${code ?? ''}: ${(err as Error).message}\n`);
        // runRank aborts the MPI job next, so the file is this rank's only record of what failed and when. Written
        // then renamed: another rank's MPI_Abort may kill this one mid-write, and a half-written file must not be read.
        const file = join(outDir, `rank-${comm.rank}.json`);
        writeFileSync(`${file}.part`, JSON.stringify({ rank: comm.rank, failedAt, code, message: (err as Error).message }));
        renameSync(`${file}.part`, file);
        process.exitCode = 1;
      },
    },
  );
}

main(process.argv[2] ?? 'conformance', Number(process.argv[3] ?? 60_000), process.argv[4] ?? '.').catch(() => {
  process.exitCode = 1;
});
