import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend } from '@pfc/core';
import { checkVectors } from './vectors';

// the benchmark and training path: float32 matmuls on the wasm backend (the other parity tests use cpu)
const VECTORS = join(__dirname, '../../../../shared/vectors/pfc');
const names = existsSync(VECTORS) ? readdirSync(VECTORS).filter((n) => existsSync(join(VECTORS, n, 'input', 'spec.json'))) : [];

beforeAll(() => initBackend({ backend: 'wasm', log: null }));

(names.length ? it : it.skip)('float32 parity with the wasm backend, world sizes 1 and 2', async () => {
  for (const name of names) {
    const r = await checkVectors(join(VECTORS, name), { dtype: 'float32', worldSizes: [1, 2], tensorBackend: 'wasm' });
    expect(r.max.lossError).toBeLessThanOrEqual(1e-5);
    expect(r.max.gradEmbeddingsError).toBeLessThanOrEqual(1e-5);
    expect(r.pass).toBe(true);
  }
});
