import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PfcError } from '@pfc/core';

/** How to get the MPI backend, for error messages. */
export const MPI_INSTALL_HINT =
  'install OpenMPI (Debian/Ubuntu: `apt-get install libopenmpi-dev openmpi-bin`), then build the binding with `npm run build:native -w @pfc/collective` (or `npm rebuild @pfc/collective`)';

/** Path of a built binding: build/Release/<name>.node beside src/ and dist/. */
export function addonPath(name: 'pfc_mpi' | 'pfc_nccl'): string {
  return join(__dirname, '..', 'build', 'Release', `${name}.node`);
}

/**
 * Loads a native binding, or throws `E_BACKEND_UNAVAILABLE` naming the backend, the file and how to get it.
 * @param name binding file name without `.node`
 * @param backend backend name for the message
 * @param hint what to install or run
 */
export function loadAddon<T>(name: 'pfc_mpi' | 'pfc_nccl', backend: string, hint: string): T {
  const file = addonPath(name);
  if (!existsSync(file)) {
    throw new PfcError('E_BACKEND_UNAVAILABLE', `${backend} backend unavailable: the native binding ${file} is not built; ${hint}`, {
      details: { backend, file },
    });
  }
  try {
    return createRequire(__filename)(file) as T;
  } catch (cause) {
    throw new PfcError('E_BACKEND_UNAVAILABLE', `${backend} backend unavailable: loading ${file} failed (${(cause as Error).message}); ${hint}`, {
      cause,
      details: { backend, file },
    });
  }
}

/** dtype codes shared with the bindings. */
export function dtypeCode(a: ArrayBufferView): 0 | 1 | 2 | 3 {
  if (a instanceof Float32Array) return 0;
  if (a instanceof Float64Array) return 1;
  if (a instanceof Int32Array) return 2;
  if (a instanceof Uint16Array) return 3;
  throw new PfcError('E_ARGUMENT', `collective: argument 'buf' must be a Float32Array, Float64Array, Int32Array or Uint16Array (fp16), got ${Object.prototype.toString.call(a)}`);
}
