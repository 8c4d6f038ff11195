import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const hasMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0;

interface ShortResult {
  worldSize: number;
  globalStep: number;
  losses: number[];
  verification: { name: string; accuracy: number }[];
  ijbTar: { far: number; tar: number }[];
}

function run(prefix: string[], workDir: string): ShortResult {
  const out = join(workDir, 'result.json');
  const script = join(__dirname, '__fixtures__', 'recipe-short.ts');
  const [cmd, ...args] = [...prefix, process.execPath, '--conditions=@pfc/source', '-r', 'tsx/cjs', script, workDir, out];
  const p = spawnSync(cmd!, args, { cwd: join(__dirname, '..'), encoding: 'utf8', timeout: 600_000 });
  if (p.status !== 0) throw new Error(`${cmd} exited ${p.status}: ${p.stderr.slice(-2000)}`);
  return JSON.parse(readFileSync(out, 'utf8')) as ShortResult;
}

/**
 * The embedded glint360k default (shortened) as a 2-process `mpirun` job reaches the same result as the 2-thread run:
 * the same data order, seeds and collectives give the same losses (to float32 summation order, 1e-4 relative) and the
 * same held-out verification accuracy (to one pair in 400).
 */
describe('runRecipe under mpirun (2 processes)', () => {
  (hasMpirun ? it : it.skip)('reaches the same accuracy as the threads run', () => {
    const mpirun = ['mpirun', '-np', '2', '--oversubscribe', '--mca', 'btl', 'self,vader', ...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : [])];
    const mpi = run(mpirun, mkdtempSync(join(tmpdir(), 'pfc-recipe-mpi-')));
    const threads = run([], mkdtempSync(join(tmpdir(), 'pfc-recipe-threads-')));
    expect(mpi.worldSize).toBe(2);
    expect(threads.worldSize).toBe(2);
    expect(mpi.globalStep).toBe(threads.globalStep);
    expect(mpi.losses).toHaveLength(threads.losses.length);
    mpi.losses.forEach((l, i) => expect(Math.abs(l - threads.losses[i]!)).toBeLessThanOrEqual(1e-4 * Math.abs(threads.losses[i]!)));
    const a = mpi.verification.find((v) => v.name === 'synth_val')!.accuracy;
    const b = threads.verification.find((v) => v.name === 'synth_val')!.accuracy;
    expect(a).toBeGreaterThan(0.75);
    expect(Math.abs(a - b)).toBeLessThanOrEqual(1 / 400 + 1e-12);
  }, 1_200_000);
});
