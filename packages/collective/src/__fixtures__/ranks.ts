/** Rank functions that the threads tests run through runThreads (a worker needs a module to load). */
import { PfcError } from '@pfc/core';
import type { Communicator } from '../communicator';
import { runConformance, type ConformanceOptions } from '../conformance';
import { rankCommunicator } from '../context';
import { createCommunicator } from '../factory';

export async function conformance(comm: Communicator, options: ConformanceOptions): Promise<unknown> {
  return runConformance(comm, options);
}

export async function sumRanks(comm: Communicator): Promise<number[]> {
  return [...(await comm.allReduce(new Float64Array([comm.rank, 1]), 'sum'))];
}

export async function identity(comm: Communicator): Promise<{ rank: number; same: boolean; backend: string }> {
  return { rank: comm.rank, same: rankCommunicator() === comm, backend: comm.backend };
}

/** Rank `args.bad` fails in the way `args.how` names; the others loop over collectives. */
export async function failing(comm: Communicator, args: { bad: number; how: 'throw' | 'pfc' | 'exit' | 'uncaught' | 'hang' }): Promise<number> {
  await comm.barrier();
  if (comm.rank === args.bad) {
    if (args.how === 'throw') throw new Error('boom');
    if (args.how === 'pfc') {
      throw new PfcError('E_LABEL_RANGE', 'label 7 at index 3 is outside [0, 5)');
    }
    if (args.how === 'exit') process.exit(3);
    if (args.how === 'uncaught') {
      setTimeout(() => {
        throw new Error('uncaught boom');
      }, 1);
      await new Promise((r) => setTimeout(r, 10_000));
    }
    if (args.how === 'hang') {
      const end = Date.now() + 60_000;
      while (Date.now() < end) {
        /* busy: never joins the next collective */
      }
    }
  }
  for (let i = 0; i < 1000; i++) await comm.allReduce(new Float32Array(16), 'sum');
  return comm.rank;
}

/** Mismatched calls: rank 0 allReduces 2 elements, the others 3. */
export async function mismatch(comm: Communicator): Promise<void> {
  await comm.allReduce(new Float32Array(comm.rank === 0 ? 2 : 3));
}

/** While waiting in a collective for a slow rank, this rank's event loop keeps running timers. */
export async function responsive(comm: Communicator): Promise<number> {
  await comm.barrier();
  let ticks = 0;
  if (comm.rank === 1) await new Promise((r) => setTimeout(r, 300));
  const t = setInterval(() => ticks++, 10);
  await comm.barrier();
  clearInterval(t);
  return ticks;
}

/** What createCommunicator() picks inside a threads rank. */
export async function factoryInRank(comm: Communicator): Promise<{ same: boolean; backend: string }> {
  const c = await createCommunicator({ env: {} });
  return { same: c === comm, backend: c.backend };
}
