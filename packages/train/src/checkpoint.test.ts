import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CheckpointManager, checkpointName, type CheckpointState } from './checkpoint';

const state = (step: number): CheckpointState => ({
  format: 'pfc-train-checkpoint',
  version: 1,
  globalStep: step,
  epoch: 0,
  stepInEpoch: step,
  samplesInEpoch: step * 8,
  worldSize: 2,
  batchSize: 4,
  scheduler: { lastEpoch: step },
  optimizer: { kind: 'sgd', step, slots: ['momentum_buffer'] },
  numClasses: 10,
  embeddingSize: 4,
  network: 'small',
  rng: [],
  wallTime: 0,
});

describe('CheckpointManager', () => {
  it('commits atomically, points latest at the newest complete checkpoint and keeps the last `keep`', () => {
    const root = join(mkdtempSync(join(tmpdir(), 'pfc-ck-')), 'checkpoints');
    const m = new CheckpointManager(root, 2);
    expect(m.latest()).toBeNull();
    for (const s of [2, 4, 6]) {
      const dir = m.begin(s);
      writeFileSync(join(dir, 'part'), String(s));
      m.commit(s, state(s));
    }
    expect(readdirSync(root).sort()).toEqual(['latest', 'step-00000004', 'step-00000006']);
    expect(m.latest()).toBe(join(root, 'step-00000006'));
    expect(m.readState(m.latest()!).globalStep).toBe(6);
    // An interrupted write leaves a temporary directory that never becomes `latest` and is cleaned at start.
    writeFileSync(join(m.begin(8), 'part'), 'torn');
    expect(m.latest()).toBe(join(root, 'step-00000006'));
    m.cleanStale();
    expect(existsSync(join(root, '.tmp-step-00000008'))).toBe(false);
    expect(checkpointName(12)).toBe('step-00000012');
  });
  it('rejects a latest pointer to a missing state and a foreign state.json', () => {
    const root = mkdtempSync(join(tmpdir(), 'pfc-ck-'));
    writeFileSync(join(root, 'latest'), 'step-00000009\n');
    const m = new CheckpointManager(root);
    expect(() => m.latest()).toThrow(/points to step-00000009, which has no state.json/);
    mkdirSync(join(root, 'x'));
    writeFileSync(join(root, 'x', 'state.json'), JSON.stringify({ format: 'other' }));
    expect(() => m.readState(join(root, 'x'))).toThrow(/not a pfc-train checkpoint/);
  });
});
