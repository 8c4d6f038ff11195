import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Rng, initBackend, readNpy, writeNpy } from '@pfc/core';
import { main } from './cli';
import { createBackbone } from './model';
import { loadSafetensors, saveSafetensors } from './weights';
import { readSafetensors } from './safetensors';

const TINY = { name: 'iresnet' as const, layers: [1, 1, 1, 1], widths: [4, 6, 8, 8], embeddingSize: 8, inputSize: 16 };
let dir: string;

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s: string) => out.push(s), err: (s: string) => err.push(s) }, out, err };
}

beforeAll(async () => {
  await initBackend({ backend: 'cpu', log: null });
  dir = mkdtempSync(join(tmpdir(), 'pfc-backbone-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('pfc-backbone', () => {
  it('summary prints the reference sizes, as text and JSON', async () => {
    const a = io();
    expect(await main(['summary', 'r100'], a.io)).toBe(0);
    expect(a.out.join('')).toMatch(/r100: 65\.16 M parameters .* 12\.09 GMACs at 3x112x112, embedding 512/);
    const b = io();
    expect(await main(['summary', 'mbf', '--json'], b.io)).toBe(0);
    const j = JSON.parse(b.out.join(''));
    expect((j.params / 1e6).toFixed(2)).toBe('2.06');
    expect((j.macs / 1e9).toFixed(2)).toBe('0.44');
    const c = io();
    expect(await main(['summary', 'r42'], c.io)).toBe(1);
    expect(c.err.join('')).toMatch(/E_ARGUMENT: unknown network "r42"/);
  });

  it('export-onnx, convert both ways and run agree with the library', async () => {
    const model = createBackbone(TINY, { seed: 1 });
    const st = join(dir, 'm.safetensors');
    saveSafetensors(model, st);
    const onnx = join(dir, 'm.onnx');
    expect(await main(['export-onnx', st, onnx], io().io)).toBe(0);
    const back = join(dir, 'back.safetensors');
    expect(await main(['convert', onnx, back], io().io)).toBe(0);
    const a = readSafetensors(st).tensors;
    const b = readSafetensors(back).tensors;
    for (const [k, t] of a) if (t.dtype === 'float32') expect(Buffer.from((b.get(k)!.data as Float32Array).buffer).equals(Buffer.from((t.data as Float32Array).buffer))).toBe(true);
    const again = join(dir, 'again.onnx');
    expect(await main(['convert', back, again], io().io)).toBe(0);
    expect(readFileSync(again).length).toBeGreaterThan(0);

    const rng = new Rng(2);
    const x = Float32Array.from({ length: 3 * 3 * 16 * 16 }, () => rng.uniform() * 2 - 1);
    writeNpy(join(dir, 'x.npy'), x, [3, 3, 16, 16], 'f4');
    for (const w of [st, onnx]) {
      const out = join(dir, 'y.npy');
      expect(await main(['run', w, '--input', join(dir, 'x.npy'), '--out', out, '--batch-size', '2', '--backend', 'cpu'], io().io)).toBe(0);
      const y = readNpy(out);
      expect(y.shape).toEqual([3, 8]);
      const expected = tf.tidy(() => model.apply(tf.transpose(tf.tensor4d(x, [3, 3, 16, 16]), [0, 2, 3, 1])).dataSync());
      let m = 0;
      for (let i = 0; i < expected.length; i++) m = Math.max(m, Math.abs(expected[i]! - (y.data as Float32Array)[i]!));
      expect(m).toBeLessThan(1e-5); // same backend, same weights; batching changes nothing in inference mode
    }
    const loaded = loadSafetensors(back);
    expect(loaded.config).toEqual(model.config);
    loaded.dispose();
    model.dispose();
  });

  it('run rejects images of the wrong size with E_SHAPE naming the expected shape', async () => {
    const model = createBackbone(TINY);
    const st = join(dir, 'shape.safetensors');
    saveSafetensors(model, st);
    writeNpy(join(dir, 'bad.npy'), new Float32Array(2 * 3 * 8 * 8), [2, 3, 8, 8], 'f4');
    const r = io();
    expect(await main(['run', st, '--input', join(dir, 'bad.npy'), '--out', join(dir, 'o.npy'), '--backend', 'cpu'], r.io)).toBe(1);
    expect(r.err.join('')).toMatch(/E_SHAPE: .*bad\.npy: images must be NCHW \[N, 3, 16, 16\], got \[2, 3, 8, 8\]/);
    const c = io();
    expect(await main(['convert', st, join(dir, 'x.safetensors')], c.io)).toBe(1);
    expect(c.err.join('')).toMatch(/E_ARGUMENT/);
    model.dispose();
  });

  it('every command has --help with examples', async () => {
    for (const cmd of ['summary', 'export-onnx', 'convert', 'run']) {
      const h = io();
      expect(await main([cmd, '--help'], h.io)).toBe(0);
      expect(h.out.join('')).toMatch(/Examples:\n {2}\$ pfc-backbone/);
    }
  });
});
