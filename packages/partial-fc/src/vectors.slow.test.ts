import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { checkVectors } from './vectors';

const DIR = join(__dirname, '../../../../shared/vectors/pfc/arcface_small_uneven_c51');

describe('check-vectors with worker-thread ranks', () => {
  (existsSync(DIR) ? it : it.skip)('gives the same result as in-thread ranks', async () => {
    const threads = await checkVectors(DIR, { dtype: 'float64', backend: 'threads' });
    const local = await checkVectors(DIR, { dtype: 'float64', backend: 'local' });
    expect(threads.backend).toBe('threads');
    expect(threads.pass).toBe(true);
    expect(threads.runs.map((r) => r.loss)).toEqual(local.runs.map((r) => r.loss));
  });
});
