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
  it('re-committing a step replaces it, and a commit cut between the two renames still leaves a complete latest', () => {
    const root = join(mkdtempSync(join(tmpdir(), 'pfc-ck-')), 'checkpoints');
    const m = new CheckpointManager(root, 2);
    writeFileSync(join(m.begin(4), 'part'), 'first');
    m.commit(4, state(4));
    writeFileSync(join(m.begin(4), 'part'), 'second');
    m.commit(4, { ...state(4), wallTime: 2 });
    expect(readdirSync(root).sort()).toEqual(['latest', 'step-00000004']);
    expect(readFileSync(join(m.latest()!, 'part'), 'utf8')).toBe('second');

    // The process dies right after the old copy was moved aside: the rename of the new one never happens.
    writeFileSync(join(m.begin(4), 'part'), 'third');
    // The module object checkpoint.ts calls into (an `import * as` namespace here would be a copy).
    const fs = require('node:fs') as typeof import('node:fs');
    const real = fs.renameSync;
    const spy = jest.spyOn(fs, 'renameSync').mockImplementation((from, to) => {
      if (String(from) === join(root, '.tmp-step-00000004')) throw new Error('killed');
      real(from, to);
    });
    try {
      expect(() => m.commit(4, { ...state(4), wallTime: 3 })).toThrow('killed');
    } finally {
      spy.mockRestore();
    }
    expect(existsSync(join(root, 'step-00000004'))).toBe(false);
    // `latest` still names step-00000004; the complete previous copy answers for it, and the next start restores it.
    const dir = m.latest()!;
    expect(readFileSync(join(dir, 'part'), 'utf8')).toBe('second');
    expect(m.readState(dir).wallTime).toBe(2);
    m.cleanStale();
    expect(readdirSync(root).sort()).toEqual(['latest', 'step-00000004']);
    expect(m.latest()).toBe(join(root, 'step-00000004'));
    expect(readFileSync(join(root, 'step-00000004', 'part'), 'utf8')).toBe('second');
  });
});
