import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Rng, initBackend, readNpy, writeNpy } from '@pfc/core';
import { importOnnx } from './onnx/onnx';
import { maxAbsDiff, ours, randomImages, randomiseBuffers } from './onnx/parity.test-helpers';
import { saveSafetensors } from './weights';
import { Backbone, backwardFromEmbeddings, createBackbone } from './model';
import { toTorchLayout } from './layout';

/**
 * Parity with PyTorch itself (Debian's python3-torch 1.13, the version of the reference's measurements): a @pfc r18
 * saved as safetensors loads into a PyTorch iResNet with `load_state_dict(strict=True)` and gives the same embeddings
 * in inference and training mode; the graph `torch.onnx.export` writes for it imports here and gives them too.
 * Skipped where no Python with torch is installed (`.ci/run` installs python3-torch).
 */
const python = [process.env.PFC_TORCH_PYTHON, 'python3', '/usr/bin/python3'].find(
  (p) => p && spawnSync(p, ['-c', 'import torch, numpy'], { stdio: 'ignore' }).status === 0,
);
const SCRIPT = join(__dirname, '__fixtures__', 'torch_iresnet.py');

beforeAll(async () => {
  await initBackend({ backend: 'wasm', log: null });
});

(python ? describe : describe.skip)('r18 against PyTorch (python3-torch)', () => {
  it('safetensors load strictly into PyTorch; embeddings, batch statistics and the torch.onnx.export graph agree', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-torch-'));
    try {
      const model = createBackbone('r18', { seed: 18 });
      randomiseBuffers(model, 19);
      const N = 4;
      const dims = [N, 3, 112, 112];
      const x = randomImages(N, 112, 21);
      saveSafetensors(model, join(dir, 'r18.safetensors'));
      writeNpy(join(dir, 'x.npy'), x, dims, 'f4');
      const rng = new Rng(22);
      writeNpy(join(dir, 'demb.npy'), Float32Array.from({ length: N * 512 }, () => rng.normal()), [N, 512], 'f4');
      const p = spawnSync(python!, [SCRIPT, join(dir, 'r18.safetensors'), join(dir, 'x.npy'), dir, '2,2,2,2', '512', join(dir, 'demb.npy')], { encoding: 'utf8', timeout: 300_000 });
      if (p.status !== 0) throw new Error(`torch_iresnet.py failed (${p.status}): ${p.stderr}`);
      const yEval = readNpy(join(dir, 'y_eval.npy')).data as Float32Array;
      const yTrain = readNpy(join(dir, 'y_train.npy')).data as Float32Array;
      const runningAfter = readNpy(join(dir, 'running_after.npy')).data as Float32Array;

      // inference mode: float32 convolutions summed in different orders (PyTorch's oneDNN, XNNPACK here) over 24M
      // parameters; embeddings are O(1), 1e-4 absolute (measured ~5e-5 against onnxruntime on the same weights)
      const evalDiff = maxAbsDiff(ours(model, x, dims), yEval);
      process.stderr.write(`r18 inference vs PyTorch: max |diff| ${evalDiff.toExponential(2)}\n`);
      expect(evalDiff).toBeLessThan(1e-4);

      // training mode: batch statistics (biased variance) and the running-stat update (momentum 0.1, unbiased variance)
      const before = model.getStateDict().get('layer1.0.bn1.running_mean')!.data as Float32Array;
      const trainOut = tf.tidy(() => model.apply(tf.transpose(tf.tensor4d(x, dims as [number, number, number, number]), [0, 2, 3, 1]), { training: true }).dataSync());
      const trainDiff = maxAbsDiff(trainOut, yTrain);
      process.stderr.write(`r18 training mode vs PyTorch: max |diff| ${trainDiff.toExponential(2)}\n`);
      // as inference, plus batch statistics over 4 images (measured ~6e-5): 2e-4
      expect(trainDiff).toBeLessThan(2e-4);
      const after = model.getStateDict().get('layer1.0.bn1.running_mean')!.data as Float32Array;
      expect(maxAbsDiff(after, runningAfter)).toBeLessThan(1e-5);
      expect(maxAbsDiff(after, before)).toBeGreaterThan(1e-3); // the update happened on both sides

      // gradients of sum(embeddings · dEmb) in training mode, every trainable parameter, in PyTorch's layouts
      const dE = readNpy(join(dir, 'demb.npy')).data as Float32Array;
      const xs = tf.tidy(() => tf.transpose(tf.tensor4d(x, dims as [number, number, number, number]), [0, 2, 3, 1]));
      const ds = tf.tensor2d(dE, [N, 512]);
      const grads = backwardFromEmbeddings(model, xs, ds);
      tf.dispose([xs, ds]);
      const specs = new Map(model.summary.params.map((s) => [s.name, s]));
      expect(grads.size).toBe(model.trainableVariables.length);
      const pairs = [...grads].map(([name, g]) => {
        const mine = toTorchLayout(specs.get(name)!, g.dataSync() as Float32Array);
        g.dispose();
        const t32 = readNpy(join(dir, 'grad', `${name}.npy`)).data as Float32Array;
        const t64 = readNpy(join(dir, 'grad64', `${name}.npy`)).data as Float64Array;
        let scale = 0;
        for (const v of t64) scale = Math.max(scale, Math.abs(v));
        return { name, ours: maxAbsDiff(mine, t64), torch32: maxAbsDiff(t32, t64), scale };
      });
      const top = Math.max(...pairs.map((q) => q.scale));
      // Errors against PyTorch's float64 gradients, relative to each tensor's largest gradient floored at 1 % of the
      // network's largest (the biases of a BatchNorm whose output only feeds training-mode BatchNorms have a zero
      // gradient in exact arithmetic). With random weights some gradients are ill-conditioned in float32 (training-mode
      // BatchNorm turns them into sums with heavy cancellation): PyTorch's own float32 gradients are off by up to ~1 %
      // there. The bound per tensor: 3 × PyTorch float32's error, plus 1e-4 of the tensor's scale.
      const rel = (v: number, q: { scale: number }) => v / Math.max(q.scale, 0.01 * top);
      const worst = pairs.reduce((w, q) => (rel(q.ours, q) > w.rel ? { rel: rel(q.ours, q), name: q.name } : w), { rel: 0, name: '' });
      const torch32 = Math.max(...pairs.map((q) => rel(q.torch32, q)));
      process.stderr.write(`r18 gradients (${pairs.length} tensors) vs PyTorch float64: ours worst ${worst.rel.toExponential(2)} (${worst.name}), PyTorch float32 worst ${torch32.toExponential(2)}\n`);
      const beyond = pairs
        .filter((q) => rel(q.ours, q) > 3 * rel(q.torch32, q) + 1e-4)
        .map((q) => `${q.name}: ours ${rel(q.ours, q).toExponential(2)}, PyTorch float32 ${rel(q.torch32, q).toExponential(2)}`);
      expect(beyond).toEqual([]);

      // the graph PyTorch exports (BatchNorm folded into the convolutions, its own node and initializer names)
      const imported = importOnnx(readFileSync(join(dir, 'torch.onnx')), 'torch.onnx');
      expect(imported.config).toEqual(model.config);
      const fromTorch = new Backbone(imported.config);
      fromTorch.loadStateDict(imported.state, { source: 'torch.onnx' });
      const onnxDiff = maxAbsDiff(ours(fromTorch, x, dims), yEval);
      process.stderr.write(`r18 from torch.onnx.export vs PyTorch: max |diff| ${onnxDiff.toExponential(2)}\n`);
      expect(onnxDiff).toBeLessThan(1e-4);
      fromTorch.dispose();
      model.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
