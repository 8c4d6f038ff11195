import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { checkVectors } from './vectors';

const vectors = join(__dirname, '../../../../shared/vectors/pfc');
const hasMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0;
const names = existsSync(vectors) ? readdirSync(vectors).filter((n) => existsSync(join(vectors, n, 'float32', 'ws2'))) : [];

/**
 * `mpirun -np 2 pfc-partial-fc check-vectors <dir> --backend mpi` gives the same numbers as the in-process ranks:
 * with two ranks every all-reduce adds the same two values in either order, so the results agree exactly (tolerance 0).
 */
describe('check-vectors under mpirun (2 processes)', () => {
  (hasMpirun && names.length > 0 ? it : it.skip).each(names)('%s: equal to the threads/local run', async (name) => {
    const dir = join(vectors, name);
    const args = ['-np', '2', '--oversubscribe', '--mca', 'btl', 'self,vader'];
    if (process.getuid?.() === 0) args.push('--allow-run-as-root');
    const run = spawnSync(
      'mpirun',
      [...args, process.execPath, '--conditions=@pfc/source', '-r', 'tsx/cjs', join(__dirname, 'cli.ts'), 'check-vectors', dir, '--backend', 'mpi'],
      { cwd: join(__dirname, '..'), encoding: 'utf8', timeout: 240_000 },
    );
    expect(run.status).toBe(0);
    const json = run.stdout.slice(run.stdout.indexOf('{'));
    const mpi = JSON.parse(json) as Awaited<ReturnType<typeof checkVectors>>;
    const local = await checkVectors(dir, { worldSizes: [2] });
    expect(mpi.backend).toBe('mpi');
    expect(mpi.pass).toBe(true);
    expect(mpi.runs).toHaveLength(1);
    const [a, b] = [mpi.runs[0]!, local.runs[0]!];
    expect(a.worldSize).toBe(2);
    expect(a.loss).toBe(b.loss);
    expect(a.gradEmbeddingsError).toBe(b.gradEmbeddingsError);
    expect(a.gradWeightError).toBe(b.gradWeightError);
    expect(a.cosLogitsError).toBe(b.cosLogitsError);
    expect(a.sampledSetEqual).toBe(b.sampledSetEqual);
  }, 300_000);
});
