/**
 * @pfc/collective — one Communicator interface over in-process, worker-thread, MPI and NCCL ranks.
 */
export { evenCounts } from './communicator';
export type { Communicator, CollectiveArray, ReduceOp } from './communicator';
export { LocalCommunicator, createLocalGroup, runLocal } from './local';
export type { LocalGroupOptions } from './local';
