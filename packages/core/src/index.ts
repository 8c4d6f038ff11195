/**
 * @pfc/core — the small foundation shared by every @pfc package.
 */
export { PfcError, assertArg, formatValue } from './errors';
export type { PfcErrorCode, PfcErrorOptions } from './errors';
export { Rng } from './rng';
export type { RngState } from './rng';
export { parseNpy, readNpy, encodeNpy, writeNpy, npyToFloat64 } from './npy';
export type { NpyArray, NpyData, NpyDtype } from './npy';
export { toFloat16Bits, fromFloat16Bits, float32ToFloat16, float16ToFloat32 } from './float16';
export { readFileOrThrow, writeFileAtomic } from './fs';
export { initBackend, processWasmThreads, BACKEND_NAMES } from './backend';
export { MAX_WASM_THREADS } from './wasm/threads';
export type { BackendInfo, BackendName, InitBackendOptions } from './backend';
export { registerWasmTrainingKernels } from './wasm-kernels';
export { workerScript } from './workers';
export type { WorkerScript } from './workers';
export { Progress, formatDuration } from './progress';
export type { ProgressOptions } from './progress';
