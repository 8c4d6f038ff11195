/** NCCL ranks over the fake binding in runThreads workers: the file bootstrap with a blocking ncclCommInitRank. */
import type { Communicator } from '../communicator';
import { runConformance } from '../conformance';
import { createNcclCommunicator } from '../nccl';
import { fakeNcclAddon } from './fake-nccl';

/** Rank `comm.rank` joins an NCCL group through the id file `args.file`; the threads group carries the data. */
export async function fileBootstrap(comm: Communicator, args: { file: string; initBarrier: SharedArrayBuffer; large: number }): Promise<unknown> {
  const addon = fakeNcclAddon({ fabric: comm, initBarrier: new Int32Array(args.initBarrier), seed: 10 * (comm.rank + 1) });
  const nccl = await createNcclCommunicator(addon, { bootstrap: { file: args.file, rank: comm.rank, worldSize: comm.worldSize, timeoutMs: 20_000 }, device: 0 });
  const report = await runConformance(nccl, { large: args.large });
  await nccl.close();
  return { report, calls: addon.calls.filter((c) => c.fn !== 'collective') };
}
