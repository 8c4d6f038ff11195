/**
 * Multi-threaded wasm backend in Node. `@tensorflow/tfjs-backend-wasm` 4.22 turns threads off in Node, and forcing
 * them on fails three ways: its pthread workers are created from `blob:` URLs that Node's `worker_threads` rejects,
 * the thread pool is capped at logical cores / 2, and the running pthreads keep the process alive. This builds the
 * package's own threaded-SIMD module with three fixes (the worker script served from a file, the core count reported
 * as twice the wanted threads during init, the workers unref'd), and registers it as the `wasm` backend. The module
 * internals it relies on (`PThread`, the `.worker.js` export, `emscripten_num_logical_cores`) are those of the exact
 * pinned version; any failure leaves the single-threaded backend in place.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend } from '@tensorflow/tfjs-core';
import { writeFileAtomic } from '../fs';

const localRequire = createRequire(__filename);

/** The most threads: the emscripten build pre-spawns a pool of 8 workers, and a thread beyond it would deadlock. */
export const MAX_WASM_THREADS = 8;
/** The tfjs wasm backend's registration priority. */
const WASM_PRIORITY = 2;

interface Worker {
  unref(): void;
}
interface ThreadedModule {
  cwrap(name: string, ret: string | null, args: string[]): (...a: number[]) => number;
  PThread: { runningWorkers: Worker[]; unusedWorkers: Worker[] };
  tfjs?: Record<string, unknown>;
}
interface WasmPackage {
  BackendWasm: new (module: unknown) => KernelBackend;
  setThreadsCount(n: number): void;
  getThreadsCount(): number;
  version_wasm: string;
}

/** The global `WebAssembly` (the ES2022 lib has no types for it). */
const wasmApi = (globalThis as unknown as { WebAssembly: { instantiate(bytes: Uint8Array, imports: unknown): Promise<{ instance: unknown; module: unknown }> } })
  .WebAssembly;

let threaded: ThreadedModule | null = null;

function wasmPackage(): WasmPackage {
  return localRequire('@tensorflow/tfjs-backend-wasm') as WasmPackage;
}

/** Writes the pthread worker script to a file named by its content hash (a `blob:` URL is what Node rejects). */
function workerScriptFile(outDir: string, version: string): string {
  // The package ships the script as a template string; like tfjs's own init, escape its newlines in string literals.
  const contents = (localRequire(join(outDir, 'tfjs-backend-wasm-threaded-simd.worker.js')) as { wasmWorkerContents: string }).wasmWorkerContents.replace(
    /\n/g,
    '\\n',
  );
  const hash = createHash('sha256').update(contents).digest('hex').slice(0, 12);
  const file = join(tmpdir(), `pfc-tfjs-wasm-${version}-${hash}.worker.js`);
  if (!existsSync(file)) writeFileAtomic(file, new TextEncoder().encode(contents));
  return file;
}

/**
 * Instantiates the threaded-SIMD module. Its `init_with_threads_count` caps the pool at cores / 2, so the core
 * count the module asks for is reported as `2 × threads` (the wasm import is replaced before instantiation).
 */
async function createThreadedModule(threads: number): Promise<ThreadedModule> {
  const pkg = wasmPackage();
  const outDir = join(dirname(localRequire.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'wasm-out');
  const mainScript = join(outDir, 'tfjs-backend-wasm-threaded-simd.js');
  const wasmFile = join(outDir, 'tfjs-backend-wasm-threaded-simd.wasm');
  const workerFile = workerScriptFile(outDir, pkg.version_wasm);
  const factory = localRequire(mainScript) as (config: Record<string, unknown>) => Promise<ThreadedModule>;
  // A failed instantiation would otherwise leave the factory's promise pending forever.
  let fail: (err: unknown) => void = () => {};
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  const created = factory({
    locateFile: (path: string, prefix: string) => (path.endsWith('.worker.js') ? workerFile : path.endsWith('.wasm') ? wasmFile : prefix + path),
    // The workers `importScripts` the main script: a path works in Node, the default Blob does not.
    mainScriptUrlOrBlob: mainScript,
    instantiateWasm: (
      info: { env: Record<string, unknown> },
      receive: (instance: unknown, module: unknown) => void,
    ) => {
      info.env.emscripten_num_logical_cores = () => 2 * threads;
      wasmApi.instantiate(readFileSync(wasmFile), info).then((r) => receive(r.instance, r.module), fail);
      return {};
    },
    onAbort: (what: unknown) => fail(new Error(`the threaded wasm module aborted: ${String(what)}`)),
  });
  const module = await Promise.race([created, failed]);
  // The same bindings tfjs's own init adds.
  module.tfjs = {
    init: module.cwrap('init', null, []),
    initWithThreadsCount: module.cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: module.cwrap('get_threads_count', 'number', []),
    registerTensor: module.cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: module.cwrap('dispose_data', null, ['number']),
    dispose: module.cwrap('dispose', null, []),
  };
  return module;
}

/** Whether the tfjs `wasm` backend has been initialised already (without initialising it). */
export function wasmBackendInitialised(): boolean {
  const registry = (tf.engine() as unknown as { registry: Record<string, unknown> }).registry;
  return registry.wasm != null;
}

/**
 * Registers a threaded `wasm` backend with `threads` threads (2…{@link MAX_WASM_THREADS}), to be initialised by the
 * next `tf.setBackend('wasm')`. Throws, leaving the registered backend as it is, when the threaded module cannot be
 * built or when the wasm backend is already initialised with another thread count (its pool is fixed then).
 */
export async function registerThreadedWasmBackend(threads: number): Promise<void> {
  if (wasmBackendInitialised()) {
    const current = wasmThreads();
    if (current === threads) return;
    throw new Error(`the wasm backend was already initialised with ${current} thread${current === 1 ? '' : 's'} in this process`);
  }
  const pkg = wasmPackage();
  const module = await createThreadedModule(threads);
  pkg.setThreadsCount(threads);
  tf.removeBackend('wasm');
  tf.registerBackend(
    'wasm',
    () => {
      const backend = new pkg.BackendWasm(module);
      threaded = module;
      // The pool's pthreads run for the life of the process; unref'd, they no longer keep it alive.
      for (const w of [...module.PThread.runningWorkers, ...module.PThread.unusedWorkers]) w.unref();
      return backend;
    },
    WASM_PRIORITY,
  );
}

/** Threads the initialised wasm backend computes with (1 before it is initialised). */
export function wasmThreads(): number {
  if (!wasmBackendInitialised()) return 1;
  try {
    return wasmPackage().getThreadsCount();
  } catch {
    return 1;
  }
}

/** Worker threads the threaded wasm module is running (0 when the single-threaded module is in use). */
export function wasmRunningWorkers(): number {
  return threaded ? threaded.PThread.runningWorkers.length : 0;
}
