import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '@pfc/core';
import { runLocal } from '@pfc/collective';
import { resolveConfig } from './config';
import { ArrayTrainData } from './data';
import { PartialFCHead } from './pfc-head';
import { synthIdentityImage, synthIdentitySeed, writeNormalized } from '@pfc/data';
import { backboneFromConfig, trainRank } from './trainer';
import { tinyJob } from './testing.test-util';

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

function tiny(output: string, extra: Record<string, unknown> = {}) {
  return resolveConfig({ ...tinyJob(), verbose: 1000, output, random_flip: true, ...extra });
}

/** @pfc/data's synthetic identities (16 px), identity-major, as NHWC float32 in [-1, 1]. */
function tinyImages(numIdentities: number, imagesPerIdentity: number): { images: Float32Array; labels: Int32Array } {
  const n = numIdentities * imagesPerIdentity;
  const images = new Float32Array(n * 16 * 16 * 3);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = Math.floor(i / imagesPerIdentity);
    writeNormalized(images, i, synthIdentityImage(synthIdentitySeed(1, labels[i]!), i % imagesPerIdentity, { size: 16, grid: 3, maxShift: 1 }), false);
  }
  return { images, labels };
}

function tinyData(numIdentities = 6, imagesPerIdentity = 8) {
  const s = tinyImages(numIdentities, imagesPerIdentity);
  return new ArrayTrainData(s.images, s.labels, 16, numIdentities);
}

describe('trainRank', () => {
  it('trains 2 ranks, keeps the tensor count flat, checkpoints and logs', async () => {
    const out = mkdtempSync(join(tmpdir(), 'pfc-train-'));
    const cfg = tiny(out);
    const data = tinyData();
    const lines: string[] = [];
    const counts: number[] = [];
    const res = await runLocal(2, (comm) =>
      trainRank(comm, { config: cfg, data, log: (l) => lines.push(l), onStep: () => comm.rank === 0 && counts.push(tf.memory().numTensors) }),
    );
    expect(res[0]!.globalStep).toBe(6);
    expect(res[0]!.losses).toEqual(res[1]!.losses);
    expect(res[0]!.losses.every(Number.isFinite)).toBe(true);
    expect(new Set(counts.slice(1)).size).toBe(1);
    expect(lines.some((l) => /^Speed \d+\.\d\d samples\/sec   Loss \d+\.\d{4}   LearningRate 0\.\d{6}   Epoch: 0   Global Step: 4/.test(l))).toBe(true);
    expect(readdirSync(join(out, 'checkpoints')).sort()).toEqual(['latest', 'step-00000006']);
    expect(readdirSync(out)).toEqual(expect.arrayContaining(['model.safetensors', 'tensorboard']));
  });

  it('stops with E_NON_FINITE naming the step, writing no checkpoint', async () => {
    const out = mkdtempSync(join(tmpdir(), 'pfc-train-'));
    const cfg = tiny(out);
    const s = tinyImages(6, 8);
    const imgs = s.images;
    const data = new ArrayTrainData(imgs, s.labels, 16, 6);
    imgs.fill(NaN);
    await expect(runLocal(1, (comm) => trainRank(comm, { config: cfg, data, log: null }))).rejects.toMatchObject({
      code: 'E_NON_FINITE',
      message: expect.stringMatching(/at global step 1/),
    });
    expect(readdirSync(out).includes('checkpoints') ? readdirSync(join(out, 'checkpoints')) : []).toEqual([]);
  });

  it.each(['sparse', 'dense'] as const)('gradient_acc = 2, pfc_update %s: backbone and bank step on every second micro-batch only, the schedule on every one', async (update) => {
    const out = mkdtempSync(join(tmpdir(), 'pfc-train-'));
    const cfg = tiny(out, { gradient_acc: 2, num_epoch: 1, pfc_update: update, num_classes: 24, sample_rate: 0.25 });
    const backbone = backboneFromConfig(cfg);
    const v = backbone.trainableVariables[0]!.variable;
    const snaps: number[][] = [Array.from(v.dataSync().slice(0, 4))];
    let head: PartialFCHead | undefined;
    const banks: Float64Array[] = [];
    const accumulated: number[] = [];
    const [res] = await runLocal(1, (comm) => {
      head = new PartialFCHead(comm, cfg, backbone.embeddingSize);
      banks.push(head.pfc.getWeights());
      return trainRank(comm, {
        config: cfg,
        data: tinyData(24, 2),
        backbone,
        head,
        log: null,
        exportModel: false,
        onStep: () => {
          snaps.push(Array.from(v.dataSync().slice(0, 4)));
          banks.push(head!.pfc.getWeights());
          accumulated.push(head!.pfc.accumulatedRows);
        },
      });
    });
    expect(res!.globalStep).toBe(12);
    const rowsMoved = (a: Float64Array, b: Float64Array) => {
      let n = 0;
      for (let r = 0; r < 24; r++) if (a.subarray(r * 8, r * 8 + 8).some((x, j) => x !== b[r * 8 + j])) n++;
      return n;
    };
    for (let s = 1; s <= 12; s++) {
      const changed = snaps[s]!.some((x, i) => x !== snaps[s - 1]![i]);
      const moved = rowsMoved(banks[s]!, banks[s - 1]!);
      // each micro-batch samples numSample = 6 of 24 rows (its ≤ 4 positives included), so a sparse update moves the
      // union of two sampled sets (6..12 rows, never the other 12+); dense moves all 24
      const expectedMoved = s % 2 === 1 ? 0 : update === 'dense' ? 24 : moved >= 6 && moved <= 12 ? moved : -1;
      expect([s, changed, moved, accumulated[s - 1]! > 0]).toEqual([s, s % 2 === 0, expectedMoved, s % 2 === 1]);
    }
    expect(head!.pfc.stepCount).toBe(6);
    // PolynomialLRWarmup steps per micro-batch: lr(t) = base·(1 − t/T) with T = 12.
    res!.lrs.forEach((lr, t) => expect(lr).toBeCloseTo(t === 0 ? 0.05 : 0.05 * (1 - t / 12), 10));
    backbone.dispose();
  });
  it('resume continues exactly with no RNG in state.json: the losses after the checkpoint equal an uninterrupted run', async () => {
    // 24 classes, sample rate 0.25 on 2 ranks: 3 of 12 centers per shard per step with at most 4 positives in a
    // batch of 4, so random negatives are drawn and the losses depend on the restored sampling generator; random
    // flips depend on the data position.
    const extra = { num_classes: 24, sample_rate: 0.25, checkpoint_steps: 3, keep_checkpoints: 3 };
    const train = (output: string, more: Record<string, unknown> = {}, maxSteps?: number) =>
      runLocal(2, (comm) => trainRank(comm, { config: tiny(output, { ...extra, ...more }), data: tinyData(24, 2), log: null, exportModel: false, tensorboard: false, ...(maxSteps ? { maxSteps } : {}) }));
    const full = await train(mkdtempSync(join(tmpdir(), 'pfc-train-')));
    expect(full[0]!.losses).toHaveLength(6);
    const cut = mkdtempSync(join(tmpdir(), 'pfc-train-'));
    await train(cut, {}, 3);
    const resumed = await train(cut, { resume: true });
    expect(resumed[0]!.startStep).toBe(3);
    // Same process, same kernels, restored float32 state: equal bit for bit (tolerance 0).
    expect(resumed[0]!.losses).toEqual(full[0]!.losses.slice(3));
    expect(resumed[1]!.losses).toEqual(full[1]!.losses.slice(3));
  });
});
