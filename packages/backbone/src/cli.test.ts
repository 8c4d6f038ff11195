import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
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

  it('run uses a wasm thread per core by default (PFC_WASM_THREADS or --threads override) with the same embeddings', () => {
    // a fresh process each: the wasm backend's thread count is fixed once it starts
    const model = createBackbone(TINY, { seed: 3 });
    const st = join(dir, 'threads.safetensors');
    saveSafetensors(model, st);
    model.dispose();
    const rng = new Rng(4);
    writeNpy(join(dir, 'xt.npy'), Float32Array.from({ length: 4 * 3 * 16 * 16 }, () => rng.uniform() * 2 - 1), [4, 3, 16, 16], 'f4');
    const runCli = (extra: string[], env: Record<string, string | undefined>, out: string) => {
      const e = { ...process.env, ...env };
      if (env.PFC_WASM_THREADS === undefined) delete e.PFC_WASM_THREADS;
      const p = spawnSync(process.execPath, ['--require', require.resolve('tsx/cjs'), '--conditions=@pfc/source', join(__dirname, 'cli.ts'), 'run', st, '--input', join(dir, 'xt.npy'), '--out', join(dir, out), '--backend', 'wasm', ...extra], {
        encoding: 'utf8',
        env: e,
        timeout: 120_000,
      });
      expect(p.status).toBe(0);
      return { log: p.stderr, y: readNpy(join(dir, out)).data as Float32Array };
    };
    const cores = Math.min(8, availableParallelism());
    const byDefault = runCli([], { PFC_WASM_THREADS: undefined }, 'yd.npy');
    // the threaded build may be refused on some machines; the log line then says why and the run uses 1 thread
    expect(byDefault.log).toMatch(cores > 1 ? new RegExp(`tensor backend: wasm \\((${cores} threads|1 thread; threads unavailable)`) : /tensor backend: wasm \(1 thread\)/);
    const one = runCli(['--threads', '1'], { PFC_WASM_THREADS: '4' }, 'y1.npy');
    expect(one.log).toMatch(/tensor backend: wasm \(1 thread\)/);
    const env1 = runCli([], { PFC_WASM_THREADS: '1' }, 'ye.npy');
    expect(env1.log).toMatch(/tensor backend: wasm \(1 thread\)/);
    // XNNPACK splits work across threads by output tiles: the sums are the same, within float32 rounding (1e-5)
    let m = 0;
    for (let i = 0; i < one.y.length; i++) m = Math.max(m, Math.abs(one.y[i]! - byDefault.y[i]!), Math.abs(one.y[i]! - env1.y[i]!));
    expect(m).toBeLessThan(1e-5);
    expect(one.y.length).toBe(4 * 8);
  }, 300_000);

  it('a missing input file is a typed error naming it', async () => {
    const a = io();
    expect(await main(['convert', join(dir, 'nope.onnx'), join(dir, 'o.safetensors')], a.io)).toBe(1);
    expect(a.err.join('')).toContain(`pfc-backbone: E_ONNX: ${join(dir, 'nope.onnx')}: cannot read`);
    const model = createBackbone(TINY, { seed: 5 });
    const st = join(dir, 'missing-input.safetensors');
    saveSafetensors(model, st);
    model.dispose();
    const b = io();
    expect(await main(['run', st, '--input', join(dir, 'nope.npy'), '--out', join(dir, 'o.npy'), '--backend', 'cpu'], b.io)).toBe(1);
    expect(b.err.join('')).toContain(`pfc-backbone: E_NPY_OPEN: ${join(dir, 'nope.npy')}: cannot read`);
  });

  it('--threads outside 1-8 is a usage error', async () => {
    const r = io();
    expect(await main(['run', 'm.safetensors', '--input', 'x.npy', '--out', 'y.npy', '--threads', '0'], r.io)).toBe(2);
  });

  it('every command has --help with examples', async () => {
    for (const cmd of ['summary', 'export-onnx', 'convert', 'run']) {
      const h = io();
      expect(await main([cmd, '--help'], h.io)).toBe(0);
      expect(h.out.join('')).toMatch(/Examples:\n {2}\$ pfc-backbone/);
    }
  });
});
