/** Starts `src/__fixtures__/mpi-main.ts` under mpirun for the tests and the benchmark. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addonPath } from '../native';

/**
 * Whether to run the MPI tests: mpirun and the built binding are present. In CI (`CI` set) mpirun alone is enough,
 * so a binding that failed to build at install fails the tests instead of skipping them.
 */
export const mpiReady = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0 && (existsSync(addonPath('pfc_mpi')) || !!process.env.CI);

/** mpirun arguments for N ranks on this machine: loopback only, more ranks than cores allowed, root allowed in containers. */
export function mpirunArgs(np: number): string[] {
  const args = ['-np', String(np), '--oversubscribe', '--mca', 'btl', 'self,vader'];
  if (process.getuid?.() === 0) args.push('--allow-run-as-root');
  return args;
}

export interface MpiRun {
  code: number | null;
  signal: string | null;
  output: string;
  ms: number;
  results: unknown[];
}

/** Runs `mpi-main.ts <mode> <timeoutMs> <outDir>` on `np` ranks; kills mpirun after `killAfterMs`; `extraArgs` go to mpirun. */
export async function runMpiMain(np: number, mode: string, timeoutMs: number, killAfterMs = 120_000, extraArgs: readonly string[] = []): Promise<MpiRun> {
  const out = mkdtempSync(join(tmpdir(), 'pfc-mpi-'));
  const script = join(__dirname, 'mpi-main.ts');
  const t0 = Date.now();
  const child = spawn('mpirun', [...mpirunArgs(np), ...extraArgs, process.execPath, '--conditions=@pfc/source', '-r', 'tsx/cjs', script, mode, String(timeoutMs), out], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: join(__dirname, '..', '..'),
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  clearTimeout(killer);
  const files = readdirSync(out)
    .filter((f) => /^rank-\d+\.json$/.test(f))
    .sort((a, b) => parseInt(a.slice(5), 10) - parseInt(b.slice(5), 10));
  const results = files.map((f) => JSON.parse(readFileSync(join(out, f), 'utf8')) as unknown);
  rmSync(out, { recursive: true, force: true });
  return { code, signal, output, ms: Date.now() - t0, results };
}
