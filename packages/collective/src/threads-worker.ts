/**
 * Entry of one worker rank started by `runThreads`: builds the rank's ThreadsCommunicator over the group's shared
 * memory, loads the user module, calls the exported function and posts its result (or its error) to the launcher.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import { PfcError } from '@pfc/core';
import { setRankCommunicator } from './context';
import { ThreadsCommunicator, type ThreadsGroupMemory } from './threads';

interface RankData {
  memory: ThreadsGroupMemory;
  rank: number;
  module: string;
  exportName: string;
  args: unknown;
}

/** A structured-clone-safe copy of an error, rebuilt by the launcher. */
export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  details?: Record<string, unknown>;
}

function serialize(err: unknown): SerializedError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err) };
  const out: SerializedError = { name: err.name, message: err.message, stack: err.stack };
  // Duck-typed: a rank may load its own copy of @pfc/core.
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('E_')) {
    out.code = code;
    try {
      out.details = JSON.parse(JSON.stringify((err as { details?: unknown }).details ?? {})) as Record<string, unknown>;
    } catch {
      out.details = {};
    }
  }
  return out;
}

async function load(file: string): Promise<Record<string, unknown>> {
  const req = createRequire(__filename);
  if (file.endsWith('.mjs')) return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  if (/\.(c|m)?tsx?$/.test(file) && !(req.extensions as Record<string, unknown>)['.ts']) {
    try {
      req('tsx/cjs');
    } catch (cause) {
      throw new PfcError('E_ARGUMENT', `runThreads: module ${file} is TypeScript but tsx is not installed; build it to .js or install tsx`, { cause });
    }
  }
  return req(file) as Record<string, unknown>;
}

async function main(): Promise<void> {
  const data = workerData as RankData;
  const comm = new ThreadsCommunicator(data.memory, data.rank);
  setRankCommunicator(comm);
  try {
    const mod = await load(data.module);
    const fn = mod[data.exportName] ?? (mod.default as Record<string, unknown> | undefined)?.[data.exportName];
    if (typeof fn !== 'function') {
      throw new PfcError('E_ARGUMENT', `runThreads: module ${data.module} has no exported function '${data.exportName}'`, {
        details: { module: data.module, export: data.exportName },
      });
    }
    const value: unknown = await (fn as (c: ThreadsCommunicator, a: unknown) => unknown)(comm, data.args);
    parentPort!.postMessage({ type: 'result', value });
  } catch (err) {
    comm.abort(err);
    parentPort!.postMessage({ type: 'error', error: serialize(err) });
  }
}

void main();
