import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { npyToFloat64, readNpy } from '@pfc/core';
import { runLocal } from '@pfc/collective';
import { BuiltinPartialFC, shardRange } from './head';

const VEC = join(__dirname, '../../../../shared/vectors/pfc');

function load(name: string): Float64Array {
  return npyToFloat64(readNpy(name));
}

describe('shardRange', () => {
  it('splits C = 51 over 2 ranks as the reference', () => {
    expect(shardRange(51, 2, 0)).toEqual({ classStart: 0, numLocal: 26 });
    expect(shardRange(51, 2, 1)).toEqual({ classStart: 26, numLocal: 25 });
  });
});

describe('BuiltinPartialFC against the reference vectors', () => {
  for (const name of ['arcface_small', 'cosface_small', 'arcface_small_uneven_c51']) {
    for (const ws of [1, 2]) {
      const dir = join(VEC, name);
      (existsSync(join(dir, 'float32', `ws${ws}`)) ? it : it.skip)(`${name} ws${ws}: loss, embedding and center gradients`, async () => {
        const emb = Float32Array.from(load(join(dir, 'input/embeddings.npy')));
        const labels = Int32Array.from(load(join(dir, 'input/labels.npy')));
        const weight = Float32Array.from(load(join(dir, 'input/weight.npy')));
        const spec = require(join(dir, 'input/spec.json'));
        const res = require(join(dir, 'float32', `ws${ws}`, 'result.json'));
        const gEmb = load(join(dir, 'float32', `ws${ws}`, 'grad_embeddings.npy'));
        const gW = load(join(dir, 'float32', `ws${ws}`, 'grad_weight.npy'));
        const d = res.embedding_size as number;
        const C = res.num_classes as number;
        const B = labels.length / ws;
        const out = await runLocal(ws, async (comm) => {
          const head = new BuiltinPartialFC(comm, {
            numClasses: C,
            embeddingSize: d,
            sampleRate: spec.sample_rate,
            margin: [spec.m1, spec.m2, spec.m3],
            scale: spec.s,
            momentum: 0.9,
            weightDecay: 0,
            seed: 0,
          });
          head.weights.set(weight.subarray(head.classStart * d, (head.classStart + head.numLocal) * d));
          const r = await head.forwardBackward(emb.slice(comm.rank * B * d, (comm.rank + 1) * B * d), labels.slice(comm.rank * B, (comm.rank + 1) * B));
          return { ...r, gw: head.accumulatedGradient(), start: head.classStart };
        });
        // Center gradients reach ~160 in these vectors and torch computes the logits in float32, whose rounding
        // (6e-8) the scale s = 64 amplifies: the tolerance is 4e-6 relative to the largest reference value + 1e-6.
        const tolE = 4e-6 * gEmb.reduce((a, b) => Math.max(a, Math.abs(b)), 0) + 1e-6;
        const tolW = 4e-6 * gW.reduce((a, b) => Math.max(a, Math.abs(b)), 0) + 1e-6;
        for (const o of out) {
          // float32 inputs, float64 accumulation here vs float32 in torch: 1e-4 relative on a loss of ~35.
          expect(Math.abs(o.loss - res.loss)).toBeLessThan(1e-4 * Math.max(1, res.loss));
          for (let i = 0; i < o.gradEmbeddings.length; i++) {
            expect(Math.abs(o.gradEmbeddings[i]! - gEmb[o.start === 0 && ws === 1 ? i : out.indexOf(o) * B * d + i]!)).toBeLessThan(tolE);
          }
          for (let i = 0; i < o.gw.length; i++) expect(Math.abs(o.gw[i]! - gW[o.start * d + i]!)).toBeLessThan(tolW);
        }
      });
    }
  }
});

describe('BuiltinPartialFC sampling, update and re-sharding', () => {
  it('samples floor(ρ·numLocal) centers including every positive, updates only those, and reshards on load', async () => {
    const C = 40;
    const d = 8;
    const dir = mkdtempSync(join(tmpdir(), 'pfc-head-'));
    const before = await runLocal(2, async (comm) => {
      const head = new BuiltinPartialFC(comm, { numClasses: C, embeddingSize: d, sampleRate: 0.25, margin: [1, 0, 0.4], momentum: 0.9, weightDecay: 5e-4, seed: 3 });
      expect(head.numSample).toBe(5);
      const w0 = head.weights.slice();
      const emb = Float32Array.from({ length: 4 * d }, (_, i) => Math.sin(i + comm.rank));
      const labels = Int32Array.from([1, 2, 25, 39].map((x) => (x + comm.rank) % C));
      const r = await head.forwardBackward(emb, labels);
      expect(Number.isFinite(r.loss)).toBe(true);
      head.step(0.1);
      let changed = 0;
      for (let c = 0; c < head.numLocal; c++) if (w0[c * d] !== head.weights[c * d]) changed++;
      expect(changed).toBe(5);
      await head.save(dir);
      return Array.from(head.weights);
    });
    const full = [...before[0]!, ...before[1]!];
    const [only] = await runLocal(1, async (comm) => {
      const head = new BuiltinPartialFC(comm, { numClasses: C, embeddingSize: d, sampleRate: 0.25, margin: [1, 0, 0.4], momentum: 0.9, weightDecay: 5e-4, seed: 99 });
      await head.load(dir);
      return Array.from(head.weights);
    });
    expect(only).toEqual(full);
  });
  it('initial centers do not depend on the world size', async () => {
    const mk = (ws: number) =>
      runLocal(ws, async (comm) => Array.from(new BuiltinPartialFC(comm, { numClasses: 9, embeddingSize: 4, sampleRate: 1, margin: [1, 0.5, 0], momentum: 0.9, weightDecay: 0, seed: 1 }).weights));
    expect((await mk(3)).flat()).toEqual((await mk(1)).flat());
  });
  it('rejects labels outside [0, C)', async () => {
    await expect(
      runLocal(1, async (comm) => new BuiltinPartialFC(comm, { numClasses: 3, embeddingSize: 2, sampleRate: 1, margin: [1, 0.5, 0], momentum: 0.9, weightDecay: 0, seed: 1 }).forwardBackward(new Float32Array(2), Int32Array.from([3]))),
    ).rejects.toThrow(/label 3 at global row 0/);
  });
});
