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

function gradsOn(state: StateDict) {
  const model = createBackbone(SMALL);
  model.loadStateDict(state);
  const rng = new Rng(22);
  const x = tf.tensor4d(Float32Array.from({ length: 4 * 32 * 32 * 3 }, () => rng.uniform() * 2 - 1), [4, 32, 32, 3]);
  const dEmb = tf.tensor2d(Float32Array.from({ length: 4 * 16 }, () => rng.normal(0, 1)), [4, 16]);
  const grads = backwardFromEmbeddings(model, x, dEmb);
  const out = new Map<string, Float32Array>();
  for (const [k, g] of grads) out.set(k, g.dataSync() as Float32Array);
  const emb = model.apply(x).dataSync() as Float32Array;
  const running = model.getStateDict();
  tf.dispose([x, dEmb, ...grads.values()]);
  model.dispose();
  return { grads: out, emb, running };
}

it('wasm gradients of a small iResNet equal the cpu backend within 1e-4 of each tensor’s largest gradient (+1e-5 absolute)', async () => {
  await initBackend({ backend: 'wasm', log: null });
  const seeded = createBackbone(SMALL, { seed: 21 });
  const init = seeded.getStateDict();
  seeded.dispose();
  const w = gradsOn(init);
  await initBackend({ backend: 'cpu', log: null });
  const c = gradsOn(init);
  let worst = 0;
  for (const [name, gc] of c.grads) {
    const gw = w.grads.get(name)!;
    let scale = 1e-6;
    let diff = 0;
    for (let i = 0; i < gc.length; i++) {
      scale = Math.max(scale, Math.abs(gc[i]!));
      diff = Math.max(diff, Math.abs(gc[i]! - gw[i]!));
    }
    // float32 on both sides with different reduction orders through ~13 layers: 1e-4 of the tensor's scale.
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
