import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, readNpy, writeNpy } from '@pfc/core';
import { importOnnx } from './onnx/onnx';
import { maxAbsDiff, ours, randomImages, randomiseBuffers } from './onnx/parity.test-helpers';
import { saveSafetensors } from './weights';
import { Backbone, createBackbone } from './model';

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
      const p = spawnSync(python!, [SCRIPT, join(dir, 'r18.safetensors'), join(dir, 'x.npy'), dir, '2,2,2,2', '512'], { encoding: 'utf8', timeout: 300_000 });
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
