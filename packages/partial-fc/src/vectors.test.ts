import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend } from '@pfc/core';
import { checkVectors } from './vectors';

const VECTORS = join(__dirname, '../../../../shared/vectors/pfc');
const names = existsSync(VECTORS) ? readdirSync(VECTORS).filter((n) => existsSync(join(VECTORS, n, 'input', 'spec.json'))) : [];

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

describe('parity with the reference vectors (world sizes 1 and 2)', () => {
  (names.length ? it : it.skip)('finds the vectors', () => expect(names.length).toBeGreaterThanOrEqual(4));

  describe.each(names.length ? names : ['none'])('%s', (name) => {
    const dir = join(VECTORS, name);
    (names.length ? it : it.skip)('float32: loss and embedding gradients ≤ 1e-5 abs; the rest within the stated tolerances', async () => {
      const r = await checkVectors(dir, { dtype: 'float32', worldSizes: [1, 2] });
      expect(r.runs.map((x) => x.worldSize)).toEqual([1, 2]);
      for (const run of r.runs) {
        expect(run.lossError).toBeLessThanOrEqual(1e-5);
        expect(run.gradEmbeddingsError).toBeLessThanOrEqual(1e-5);
        expect(run.gradEmbeddingsRawError!).toBeLessThanOrEqual(2e-5); // raw = W × true derivative
        expect(run.cosLogitsError!).toBeLessThanOrEqual(1e-6);
        expect(run.labelsRemappedEqual).toBe(true);
        expect(run.sampledSetEqual).toBe(true);
      }
      // bank gradients reach |g| ≈ 160 on these vectors, where one float32 ulp is 1.5e-5 (see defaultTolerances)
      expect(r.pass).toBe(true);
    });
    (names.length ? it : it.skip)('float64: everything ≤ 1e-9', async () => {
      const r = await checkVectors(dir, { dtype: 'float64', worldSizes: [1, 2] });
      for (const run of r.runs) {
        expect(run.lossError).toBeLessThanOrEqual(1e-9);
        expect(run.gradEmbeddingsError).toBeLessThanOrEqual(1e-9);
        expect(run.gradWeightError!).toBeLessThanOrEqual(1e-9);
        expect(run.marginLogitsError!).toBeLessThanOrEqual(1e-9);
      }
      expect(r.pass).toBe(true);
    });
  });
});
