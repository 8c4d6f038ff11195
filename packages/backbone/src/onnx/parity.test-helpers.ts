import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Rng } from '@pfc/core';
import type { Backbone, StateDict } from '../model';

/** Test helpers shared by the ONNX parity tests (not part of the published package). */

/** Random but plausible state: BN statistics and affine terms away from their defaults so every term is tested. */
export function randomiseBuffers(model: Backbone, seed: number): void {
  const rng = new Rng(seed);
  const state = model.getStateDict();
  for (const [name, t] of state) {
    if (t.dtype !== 'float32') continue;
    const d = t.data as Float32Array;
    if (name.endsWith('.weight') && t.shape.length === 4) {
      // Fan-in-scaled convolutions keep a deep, untrained network's activations O(1) in inference mode (the
      // reference's N(0, 0.1) relies on batch statistics), so an absolute tolerance is meaningful.
      const std = 1 / Math.sqrt(t.shape[1]! * t.shape[2]! * t.shape[3]!);
      d.forEach((_, i) => (d[i] = rng.normal(0, std)));
    } else if (name.endsWith('running_var')) d.forEach((_, i) => (d[i] = 0.5 + rng.uniform()));
    else if (name.endsWith('running_mean')) d.forEach((_, i) => (d[i] = rng.normal(0, 0.1)));
    else if (/bn\d|downsample\.1|features|layers\.\d+\.layers\.1|layers\.1$/.test(name) && name.endsWith('.bias')) d.forEach((_, i) => (d[i] = rng.normal(0, 0.1)));
    else if (name.endsWith('prelu.weight') || /layers\.2\.weight$/.test(name)) d.forEach((_, i) => (d[i] = rng.uniform() * 0.5));
  }
  model.loadStateDict(state);
}

export function randomImages(n: number, s: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * 3 * s * s }, () => rng.uniform() * 2 - 1);
}

/**
 * Runs a model with onnxruntime-node in a child process: inside jest's sandbox onnxruntime-common sees the sandbox's
 * Float32Array and rejects the native outputs (a realm mismatch), so the runtime gets a plain Node process.
 */
export async function runOrt(bytes: Uint8Array, nchw: Float32Array, dims: number[]): Promise<Float32Array> {
  const dir = mkdtempSync(join(tmpdir(), 'pfc-ort-'));
  try {
    writeFileSync(join(dir, 'm.onnx'), bytes);
    writeFileSync(join(dir, 'x.bin'), Buffer.from(nchw.buffer, nchw.byteOffset, nchw.byteLength));
    const script = `
      const ort = require(${JSON.stringify(require.resolve('onnxruntime-node'))});
      const fs = require('fs');
      (async () => {
        const s = await ort.InferenceSession.create(process.argv[1] + '/m.onnx');
        const b = fs.readFileSync(process.argv[1] + '/x.bin');
        const x = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
        const o = await s.run({ data: new ort.Tensor('float32', x, ${JSON.stringify(dims)}) });
        const y = o[s.outputNames[0]].data;
        fs.writeFileSync(process.argv[1] + '/y.bin', Buffer.from(y.buffer, y.byteOffset, y.byteLength));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    execFileSync(process.execPath, ['-e', script, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    const y = readFileSync(join(dir, 'y.bin'));
    return new Float32Array(y.buffer.slice(y.byteOffset, y.byteOffset + y.byteLength));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function ours(model: Backbone, nchw: Float32Array, dims: number[]): Float32Array {
  return tf.tidy(() => model.apply(tf.transpose(tf.tensor4d(nchw, dims as [number, number, number, number]), [0, 2, 3, 1])).dataSync() as Float32Array);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function expectFloatStateEqual(a: StateDict, b: StateDict): void {
  for (const [k, t] of a) {
    if (t.dtype !== 'float32') continue;
    const u = b.get(k);
    expect(u).toBeDefined();
    expect(Buffer.from(u!.data.buffer, u!.data.byteOffset, u!.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))).toBe(true);
  }
}

