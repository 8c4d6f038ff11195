import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, TSX_CJS, writeTinyJob } from './testing.test-util';

const hasMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0;
const MPIRUN = ['mpirun', '-np', '2', '--oversubscribe', '--mca', 'btl', 'self,vader', ...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : [])];

function mpirun(args: string[]): { status: number | null; out: string } {
  const [cmd, ...rest] = [...MPIRUN, process.execPath, '--require', TSX_CJS, '--conditions=@pfc/source', CLI, ...args];
  // No --backend and no PFC_COLLECTIVE: the CLI must find out from mpirun's variables that it is one of 2 ranks.
  const env = { ...process.env };
  delete env.PFC_COLLECTIVE;
  const p = spawnSync(cmd!, rest, { encoding: 'utf8', timeout: 300_000, env });
  return { status: p.status, out: `${p.stdout}${p.stderr}` };
}

/**
 * `mpirun -np 2 node … cli.ts --config job.json` with no `--backend`: one 2-rank MPI job, not two 1-rank jobs. 48
 * images of batch 4 give 6 steps per epoch on 2 ranks (12 on 1), and the checkpoint records world size 2.
 */
describe('pfc-train under mpirun (2 processes, backend from the environment)', () => {
  const root = mkdtempSync(join(tmpdir(), 'pfc-cli-mpi-'));
  let config = '';

  beforeAll(async () => {
    config = await writeTinyJob(root);
  }, 120_000);

  (hasMpirun ? it : it.skip)('trains one job of world size 2 with the MPI backend', () => {
    const output = join(root, 'out');
    const r = mpirun(['--config', config, '--output', output, '--tensor-backend', 'cpu']);
    expect(r.status).toBe(0);
    expect(r.out).toContain(`finished at global step 6 (started at 0) on 2 rank(s), backend mpi; outputs in ${output}`);
    // Two independent 1-rank jobs would each print the config and finish at step 12.
    expect(r.out).not.toMatch(/global step 12/);
    expect(r.out.match(/finished at global step/g)).toHaveLength(1);
    const latest = readFileSync(join(output, 'checkpoints', 'latest'), 'utf8').trim();
    const state = JSON.parse(readFileSync(join(output, 'checkpoints', latest, 'state.json'), 'utf8')) as { worldSize: number; globalStep: number };
    expect(state.worldSize).toBe(2);
    expect(state.globalStep).toBe(6);
  }, 300_000);

  (hasMpirun ? it : it.skip)('--world-size that disagrees with mpirun -np fails with E_WORLD_SIZE', () => {
    const r = mpirun(['--config', config, '--output', join(root, 'bad'), '--tensor-backend', 'cpu', '--world-size', '3']);
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/option 'worldSize' is 3 but the mpi job has 2 rank\(s\)/);
  }, 300_000);
});
