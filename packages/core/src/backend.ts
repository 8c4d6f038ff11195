import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { PfcError } from './errors';
import { registerWasmTrainingKernels } from './wasm-kernels';
import { MAX_WASM_THREADS, registerThreadedWasmBackend, wasmThreads } from './wasm/threads';

/** The tensor backends @pfc can run on, best first. */
export const BACKEND_NAMES = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** What {@link initBackend} selected. */
export interface BackendInfo {
  /** @pfc name of the backend. */
  name: BackendName;
  /** The tfjs backend name (`tensorflow`, `wasm`, `cpu`). */
  tfBackend: string;
  /** Threads the backend computes with. */
  threads: number;
  /** Backends tried before this one, with the reason each was skipped. */
  skipped: { name: BackendName; reason: string }[];
}

export interface InitBackendOptions {
  /** Force a backend; default: `PFC_BACKEND` from the environment, else the best one that loads. */
  backend?: BackendName;
  /** Where the one-line selection message goes (default: stderr). Pass `null` to stay silent. */
  log?: ((message: string) => void) | null;
  /** Module loader, replaceable in tests to simulate installed or missing native backends. */
  load?: (moduleName: string) => unknown;
  /** Environment to read `PFC_BACKEND` and `PFC_WASM_THREADS` from (default `process.env`). */
  env?: Record<string, string | undefined>;
  /**
   * Threads of the wasm backend, 1 to 8 (default: `PFC_WASM_THREADS`, else 1). Above 1, tfjs's threaded-SIMD build
   * is started with @pfc's Node fixes; it must be chosen before the wasm backend first initialises in the process,
   * and if it cannot start, the single-threaded backend is used and the log line says why.
   */
  threads?: number;
}

const NATIVE_MODULE: Record<'tensorflow-gpu' | 'tensorflow', string> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
};

const localRequire = createRequire(__filename);
let announced = '';

function parseBackend(value: string, origin: string): BackendName {
  if ((BACKEND_NAMES as readonly string[]).includes(value)) return value as BackendName;
  throw new PfcError(
    'E_BACKEND_UNKNOWN',
    `${origin}: unknown backend ${JSON.stringify(value)}; valid names are ${BACKEND_NAMES.join(', ')}`,
    { details: { value, valid: [...BACKEND_NAMES] } },
  );
}

async function tryBackend(
  name: BackendName,
  load: (m: string) => unknown,
  wantedThreads: number,
  notes: string[],
): Promise<{ tfBackend: string; threads: number }> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow': {
      load(NATIVE_MODULE[name]);
      if (!(await tf.setBackend('tensorflow'))) throw new Error('the tensorflow backend did not initialise');
      return { tfBackend: 'tensorflow', threads: availableParallelism() };
    }
    case 'wasm': {
      load('@tensorflow/tfjs-backend-wasm');
      registerWasmTrainingKernels();
      if (wantedThreads > 1) {
        try {
          await registerThreadedWasmBackend(wantedThreads);
        } catch (err) {
          notes.push(`threads unavailable: ${err instanceof Error ? err.message.split('\n')[0]! : String(err)}`);
        }
      }
      if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not initialise');
      return { tfBackend: 'wasm', threads: wasmThreads() };
    }
    case 'cpu': {
      load('@tensorflow/tfjs-backend-cpu');
      if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not initialise');
      // tfjs prints a banner on the cpu backend's first tensor in Node, suggesting @tensorflow/tfjs-node; the line
      // initBackend logs already names the backend and why, so the banner is silenced (PROD only silences tfjs logs)
      tf.env().set('PROD', true);
      return { tfBackend: 'cpu', threads: 1 };
    }
  }
}

function parseThreads(value: number | string, origin: string): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (Number.isInteger(n) && n >= 1 && n <= MAX_WASM_THREADS) return n;
  throw new PfcError('E_BACKEND_THREADS', `${origin}: wasm threads must be an integer from 1 to ${MAX_WASM_THREADS}, got ${JSON.stringify(value)}`, {
    details: { value, max: MAX_WASM_THREADS },
  });
}

/**
 * Selects and initialises the tensor backend. With no choice given (argument or `PFC_BACKEND`), tries
 * `@tensorflow/tfjs-node-gpu`, then `@tensorflow/tfjs-node` (optional peers, never required), then the wasm
 * backend (SIMD, with the training kernels @pfc registers), then the pure-JS cpu backend. A forced backend that
 * cannot load is an error (`E_BACKEND_UNAVAILABLE`), not a silent fallback. The choice is logged once per process.
 */
export async function initBackend(options: InitBackendOptions = {}): Promise<BackendInfo> {
  const env = options.env ?? process.env;
  const load = options.load ?? ((m: string) => localRequire(m));
  const log = options.log === undefined ? (m: string) => process.stderr.write(`${m}\n`) : options.log;
  const forced =
    options.backend !== undefined
      ? parseBackend(options.backend, 'initBackend: option backend')
      : env.PFC_BACKEND
        ? parseBackend(env.PFC_BACKEND, 'environment variable PFC_BACKEND')
        : undefined;
  const wantedThreads =
    options.threads !== undefined
      ? parseThreads(options.threads, 'initBackend: option threads')
      : env.PFC_WASM_THREADS
        ? parseThreads(env.PFC_WASM_THREADS, 'environment variable PFC_WASM_THREADS')
        : 1;
  const candidates: BackendName[] = forced ? [forced] : [...BACKEND_NAMES];
  const skipped: BackendInfo['skipped'] = [];
  for (const name of candidates) {
    try {
      const notes: string[] = [];
      const { tfBackend, threads } = await tryBackend(name, load, wantedThreads, notes);
      const info: BackendInfo = { name, tfBackend, threads, skipped };
      const line = `[pfc] tensor backend: ${name} (${threads} thread${threads === 1 ? '' : 's'}${notes.map((n) => `; ${n}`).join('')})`;
      if (log && announced !== line) {
        announced = line;
        log(line);
      }
      return info;
    } catch (err) {
      const reason = err instanceof Error ? err.message.split('\n')[0]! : String(err);
      if (forced) {
        throw new PfcError('E_BACKEND_UNAVAILABLE', `backend '${name}' could not be loaded: ${reason}${installHint(name)}`, {
          cause: err,
          details: { backend: name },
        });
      }
      skipped.push({ name, reason });
    }
  }
  throw new PfcError('E_BACKEND_UNAVAILABLE', `no tensor backend could be loaded: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

/**
 * Wasm threads for a process that runs one model by itself (an inference or evaluation command): `PFC_WASM_THREADS`
 * when set, else the machine's cores, at most 8. `initBackend`'s own default stays 1, for the ranks of a training job
 * that each take one core (docs/decisions.md §9).
 * @throws PfcError `E_BACKEND_THREADS` when `PFC_WASM_THREADS` is not an integer from 1 to 8
 */
export function processWasmThreads(env: Record<string, string | undefined> = process.env): number {
  return env.PFC_WASM_THREADS ? parseThreads(env.PFC_WASM_THREADS, 'environment variable PFC_WASM_THREADS') : Math.min(MAX_WASM_THREADS, availableParallelism());
}

function installHint(name: BackendName): string {
  if (name === 'tensorflow-gpu' || name === 'tensorflow') {
    return `. Install it with 'npm install ${NATIVE_MODULE[name]}@4.22.0' and approve its install script ('npm install-scripts approve ${NATIVE_MODULE[name]}'); it downloads libtensorflow.`;
  }
  return '';
}
