import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, TSX_CJS, writeTinyJob } from './testing.test-util';

// util-linux `script` runs a command on a pseudo-terminal: the only way to give a child process a TTY stderr.
const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * `pfc-train --backend threads`: rank 0 trains in a worker thread whose stderr is a pipe. The progress bar must
 * follow the main process's stderr: drawn on a terminal, absent (plain log lines only) when stderr is a pipe.
 */
describe('pfc-train progress bar with worker-thread ranks', () => {
  const root = mkdtempSync(join(tmpdir(), 'pfc-progress-'));
  let config = '';
  const args = (output: string) => [process.execPath, '--require', TSX_CJS, '--conditions=@pfc/source', CLI, '--config', config, '--backend', 'threads', '--world-size', '2', '--tensor-backend', 'cpu', '--output', output];

  beforeAll(async () => {
    config = await writeTinyJob(root);
  }, 120_000);

  (hasScript ? it : it.skip)('draws the bar when the main process stderr is a terminal', () => {
    const p = spawnSync('script', ['-qfec', args(join(root, 'tty')).map(quote).join(' '), '/dev/null'], { encoding: 'utf8', timeout: 300_000 });
    expect(p.status).toBe(0);
    expect(p.stdout).toContain('finished at global step 6');
    // cli-progress hides the cursor and redraws `train [bar] done/total …` (6 steps on 2 ranks).
    expect(p.stdout).toContain('\x1B[?25l');
    expect(p.stdout).toMatch(/train \[[^\]]+\] 6\/6 /);
    // The last frame and the cursor's return arrive before the worker is terminated.
    expect(p.stdout.lastIndexOf('\x1B[?25h')).toBeGreaterThan(p.stdout.lastIndexOf('\x1B[?25l'));
  }, 300_000);

  it('prints plain lines only when stderr is a pipe', () => {
    const [cmd, ...rest] = args(join(root, 'pipe'));
    const p = spawnSync(cmd!, rest, { encoding: 'utf8', timeout: 300_000 });
    expect(p.status).toBe(0);
    expect(p.stdout).toMatch(/^Speed .* Global Step: 4 /m);
    expect(`${p.stdout}${p.stderr}`).not.toContain('\x1B[?25l');
    expect(`${p.stdout}${p.stderr}`).not.toMatch(/train \[/);
  }, 300_000);
});
