import { initBackend } from '@pfc/core';
import { createBackbone } from '../model';
import { exportOnnx, importOnnx } from './onnx';
import { expectFloatStateEqual, maxAbsDiff, ours, randomImages, randomiseBuffers, runOrt } from './parity.test-helpers';

beforeAll(async () => {
  await initBackend({ backend: 'wasm', log: null });
});

describe('r18 ONNX parity (wasm forward vs onnxruntime-node)', () => {
  it('r18 with random seeded weights matches onnxruntime within 1e-4 and re-imports exactly', async () => {
    const model = createBackbone('r18', { seed: 18 });
    randomiseBuffers(model, 19);
    const dims = [2, 3, 112, 112];
    const x = randomImages(2, 112, 20);
    const state = model.getStateDict();
    const bytes = exportOnnx('r18', state);
    const diff = maxAbsDiff(ours(model, x, dims), await runOrt(bytes, x, dims));
    process.stderr.write(`r18 wasm vs onnxruntime max |diff| = ${diff.toExponential(2)}\n`);
    expect(diff).toBeLessThan(1e-4);
    const imported = importOnnx(bytes);
    expect(imported.config).toEqual(model.config);
    expectFloatStateEqual(state, imported.state);
    model.dispose();
  });

});
