import * as tf from '@tensorflow/tfjs-core';
import { Rng, initBackend } from '@pfc/core';
import { backwardFromEmbeddings, createBackbone } from './model';
import type { StateDict } from './model';
import type { BackboneConfig } from './arch';

/**
 * Gradients of a width-reduced iResNet on the wasm backend (with @pfc/core's training kernels: filter and input
 * gradients as forward convolutions, flag-free matmuls) against the pure-JS cpu backend, from identical weights,
 * images and dL/dEmb. Both compute in float32 with different summation orders.
 */
const SMALL: BackboneConfig = { name: 'iresnet', layers: [1, 2, 1, 1], widths: [8, 16, 16, 32], embeddingSize: 16, inputSize: 32 };

/**
 * Gradients that are zero in exact arithmetic: a bias whose output reaches the loss only through a training-mode
 * BatchNorm, which subtracts the batch mean and so any constant shift (a block's last BatchNorm and its shortcut's
 * BatchNorm feed the next block's BatchNorms; bn2 and fc feed `features`). Only float32 rounding noise is left there.
 */
const VANISHING = /^(layer\d+\.\d+\.(bn3|downsample\.1)|bn2|fc)\.bias$/;

function gradsOn(state: StateDict) {
  const model = createBackbone(SMALL);
  model.loadStateDict(state);
  const rng = new Rng(22);
  const x = tf.tensor4d(Float32Array.from({ length: 4 * 32 * 32 * 3 }, () => rng.uniform() * 2 - 1), [4, 32, 32, 3]);
  const dEmb = tf.tensor2d(Float32Array.from({ length: 4 * 16 }, () => rng.normal(0, 1)), [4, 16]);
  const grads = backwardFromEmbeddings(model, x, dEmb);
  const trainable = model.trainableVariables.map((v) => v.name);
  const out = new Map<string, Float32Array>();
  for (const [k, g] of grads) out.set(k, g.dataSync() as Float32Array);
  const emb = model.apply(x).dataSync() as Float32Array;
  const running = model.getStateDict();
  tf.dispose([x, dEmb, ...grads.values()]);
  model.dispose();
  return { grads: out, trainable, emb, running };
}

it('wasm gradients of a small iResNet equal the cpu backend within 1e-4 of each tensor’s largest gradient (+1e-5 absolute)', async () => {
  await initBackend({ backend: 'wasm', log: null });
  const seeded = createBackbone(SMALL, { seed: 21 });
  const init = seeded.getStateDict();
  seeded.dispose();
  const w = gradsOn(init);
  await initBackend({ backend: 'cpu', log: null });
  const c = gradsOn(init);
  // Both backends return one gradient per trainable variable, under the same names, and none is all zeros except
  // the VANISHING ones (a backward pass that drops a variable or returns zeros would otherwise agree with itself).
  expect(c.grads.size).toBeGreaterThan(0);
  expect([...c.grads.keys()]).toEqual(c.trainable);
  expect([...w.grads.keys()]).toEqual(c.trainable);
  for (const [backend, grads] of [['wasm', w.grads], ['cpu', c.grads]] as const) {
    for (const [name, g] of grads) {
      expect({ backend, name, length: g.length }).toEqual({ backend, name, length: c.grads.get(name)!.length });
      const largest = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      // The others' largest gradients are 0.59 or more here; the vanishing ones' are rounding noise, below 3e-6. Both
      // ways are asserted, so a VANISHING pattern that matched too much or too little would fail too.
      const expected = VANISHING.test(name) ? largest <= 1e-5 : largest > 1e-2;
      expect({ backend, name, largest, expected }).toMatchObject({ backend, name, expected: true });
    }
  }
  let worst = 0;
  for (const [name, gc] of c.grads) {
    const gw = w.grads.get(name)!;
    let scale = 1e-6;
    let diff = 0;
    for (let i = 0; i < gc.length; i++) {
      scale = Math.max(scale, Math.abs(gc[i]!));
      diff = Math.max(diff, Math.abs(gc[i]! - gw[i]!));
    }
    // float32 on both sides with different reduction orders through ~14 layers: 1e-4 of the tensor's largest
    // gradient, plus 1e-5 absolute for gradients that are zero in exact arithmetic (biases feeding a training-mode
    // BatchNorm, fc.bias before `features`), where only rounding noise (~1e-6) is left.
    expect({ name, diff: diff <= 1e-4 * scale + 1e-5 }).toEqual({ name, diff: true });
    if (scale > 1e-3) worst = Math.max(worst, diff / scale);
  }
  process.stderr.write(`wasm vs cpu gradients: worst max|diff| / max|grad| over non-vanishing gradients = ${worst.toExponential(2)}\n`);
  // The forward pass after the step (inference, with the updated running statistics) agrees too.
  let e = 0;
  for (let i = 0; i < c.emb.length; i++) e = Math.max(e, Math.abs(c.emb[i]! - w.emb[i]!));
  expect(e).toBeLessThan(1e-4);
});
