import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, TSX_CJS, writeTinyJob } from './testing.test-util';
import { readEventFile } from './tensorboard';


function run(args: string[], env: Record<string, string> = {}, killOn?: RegExp): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--require', TSX_CJS, '--conditions=@pfc/source', CLI, ...args], { env: { ...process.env, ...env, PFC_BACKEND: 'cpu' } });
    let out = '';
    const onData = (b: Buffer) => {
      out += b.toString();
      if (killOn && killOn.test(out)) child.kill('SIGKILL');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('close', (code, signal) => resolve({ code, signal, out }));
  });
}

/** loss scalar per step from every event file of a run (frequent = 1: each logged value is one step's loss). */
function losses(output: string): Map<number, number> {
  const m = new Map<number, number>();
  const dir = join(output, 'tensorboard');
  for (const f of readdirSync(dir).sort()) for (const s of readEventFile(join(dir, f)).scalars) if (s.tag === 'loss') m.set(s.step, s.value);
  return m;
}

describe('pfc-train kill and resume', () => {
  const root = mkdtempSync(join(tmpdir(), 'pfc-resume-'));
  let config = '';

  beforeAll(async () => {
    config = await writeTinyJob(root, { num_epoch: 2, frequent: 1, checkpoint_steps: 2, keep_checkpoints: 3 });
  }, 120_000);

  it('continues from the last complete checkpoint after SIGKILL inside a checkpoint write, with the same losses', async () => {
    const full = join(root, 'full');
    const a = await run(['--config', config, '--backend', 'local', '--world-size', '2', '--output', full, '-q']);
    expect(a.code).toBe(0);
    const ref = losses(full);
    expect(ref.size).toBeGreaterThanOrEqual(10); // 12 steps; step 1 only starts the speed timer

    const cut = join(root, 'cut');
    const b = await run(['--config', config, '--backend', 'local', '--world-size', '2', '--output', cut], { PFC_TRAIN_HANG_IN_CHECKPOINT: '8' }, /hanging inside the checkpoint write of step 8/);
    expect(b.signal).toBe('SIGKILL');
    // The interrupted checkpoint is a temporary directory; `latest` still names the previous complete one.
    expect(readFileSync(join(cut, 'checkpoints', 'latest'), 'utf8').trim()).toBe('step-00000006');
    expect(readdirSync(join(cut, 'checkpoints'))).toContain('.tmp-step-00000008');
    const snapshot = join(root, 'snapshot');
    cpSync(cut, snapshot, { recursive: true });

    const c = await run(['--config', config, '--backend', 'local', '--world-size', '2', '--output', cut, '--resume']);
    expect(c.code).toBe(0);
    expect(c.out).toMatch(/resume: .*step-00000006 \(saved with 2 rank\(s\) at step 6\)/);
    expect(existsSync(join(cut, 'checkpoints', '.tmp-step-00000008'))).toBe(false);
    const got = losses(cut);
    // Steps 7..12 were computed by the resumed run; its logger starts its timer at step 7 and logs the mean of steps
    // 7 and 8 at step 8 (as the reference's CallBackLogging), so from step 9 on each logged value is one step's
    // loss. Same world size, deterministic kernels, restored float32 state: the losses agree exactly (tolerance 0).
    for (let s = 9; s <= 12; s++) {
      expect(got.get(s)).toBeDefined();
      expect(Math.abs(got.get(s)! - ref.get(s)!)).toBeLessThanOrEqual(0);
    }

    // Resume the same checkpoint with another rank count: the bank re-shards and training finishes.
    const d = await run(['--config', config, '--backend', 'local', '--world-size', '1', '--output', snapshot, '--resume']);
    expect(d.code).toBe(0);
    expect(d.out).toMatch(/saved with 2 rank\(s\) at step 6\); continuing at epoch 0, step 12 on 1 rank\(s\)/);
    const state = JSON.parse(readFileSync(join(snapshot, 'checkpoints', readFileSync(join(snapshot, 'checkpoints', 'latest'), 'utf8').trim(), 'state.json'), 'utf8'));
    expect(state.worldSize).toBe(1);
    expect(state.globalStep).toBe(24);
    const after = losses(snapshot);
    for (const [step, v] of after) if (step > 12) expect(Number.isFinite(v)).toBe(true);
  }, 600_000);
});
