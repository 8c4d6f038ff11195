/**
 * @pfc/collective — one Communicator interface over in-process, worker-thread, MPI and NCCL ranks.
 */
export { evenCounts } from './communicator';
export type { Communicator, CollectiveArray, ReduceOp } from './communicator';
export { LocalCommunicator, createLocalGroup, runLocal } from './local';
export type { LocalGroupOptions } from './local';
export { ThreadsCommunicator, allocateThreadsGroup } from './threads';
export type { ThreadsGroupMemory, ThreadsWaitMode } from './threads';
export { runThreads } from './launch';
export type { RunThreadsOptions } from './launch';
export { rankCommunicator } from './context';
export { runConformance } from './conformance';
export type { ConformanceCheck, ConformanceOptions, ConformanceReport } from './conformance';
export { createCommunicator, communicatorFromEnv, backendFromEnv, ncclDevice, runRank, COLLECTIVE_BACKENDS } from './factory';
export type { CollectiveBackend, CreateCommunicatorOptions, RunRankOptions } from './factory';
export { MpiCommunicator, launchedByMpi } from './mpi';
export type { MpiOptions } from './mpi';
export { NcclCommunicator, ncclAvailability } from './nccl';
export type { NcclBootstrap, NcclOptions } from './nccl';
