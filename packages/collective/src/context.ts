import type { Communicator } from './communicator';

/**
 * The communicator of the rank running in this thread, when a launcher (`runThreads`) started it. Worker threads
 * have their own module instances, so this is per thread, not process-wide state.
 */
let current: Communicator | null = null;

/** @internal Set by the threads worker before it calls the rank function. */
export function setRankCommunicator(comm: Communicator | null): void {
  current = comm;
}

/** The communicator of the rank running in this thread (inside {@link runThreads}), or null. */
export function rankCommunicator(): Communicator | null {
  return current;
}
