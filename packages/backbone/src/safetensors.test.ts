import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { PfcError, initBackend } from '@pfc/core';
import { createBackbone } from './model';
import type { StateDict } from './model';
import { decodeSafetensors, encodeSafetensors } from './safetensors';
import { inferConfigFromState, loadSafetensors, saveSafetensors } from './weights';

const TINY = { name: 'iresnet' as const, layers: [1, 2, 1, 1], widths: [4, 6, 8, 8], embeddingSize: 8, inputSize: 16 };
let dir: string;

beforeAll(async () => {
  await initBackend({ backend: 'cpu', log: null });
  dir = mkdtempSync(join(tmpdir(), 'pfc-backbone-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function expectSameState(a: StateDict, b: StateDict): void {
  expect([...b.keys()]).toEqual([...a.keys()]);
  for (const [k, t] of a) {
    const u = b.get(k)!;
    expect({ k, dtype: u.dtype, shape: u.shape }).toEqual({ k, dtype: t.dtype, shape: t.shape });
    expect(Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))).toBe(true);
  }
}

function expectCode(fn: () => unknown, code: string, text: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(PfcError.is(caught, code as `E_${string}`)).toBe(true);
  expect((caught as Error).message).toMatch(text);
}

describe('safetensors', () => {
  it('round-trips a trained model exactly, buffers and num_batches_tracked included', () => {
    const model = createBackbone(TINY, { seed: 1 });
    const x = tf.randomNormal([3, 16, 16, 3], 0, 1, 'float32', 2);
    tf.dispose(model.apply(x, { training: true }));
    tf.dispose(model.apply(x, { training: true }));
    const path = join(dir, 'm.safetensors');
    saveSafetensors(model, path);
    const back = loadSafetensors(path);
    expectSameState(model.getStateDict(), back.getStateDict());
    expect(back.getStateDict().get('layer2.1.bn3.num_batches_tracked')!.data[0]).toBe(2n);
    const e1 = model.apply(x);
    const e2 = back.apply(x);
    expect(Buffer.from(e1.dataSync().buffer).equals(Buffer.from(e2.dataSync().buffer))).toBe(true);
    tf.dispose([x, e1, e2]);
    model.dispose();
    back.dispose();
  });

  it('writes the safetensors layout: LE u64 header length, JSON with dtype/shape/data_offsets, PyTorch OIHW weights', () => {
    const model = createBackbone(TINY, { seed: 3 });
    const path = join(dir, 'layout.safetensors');
    saveSafetensors(model, path);
    const bytes = readFileSync(path);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    expect(header['conv1.weight']).toMatchObject({ dtype: 'F32', shape: [4, 3, 3, 3] });
    expect(header['bn1.num_batches_tracked']).toMatchObject({ dtype: 'I64', shape: [] });
    expect(header['fc.weight'].shape).toEqual([8, 8 * 1 * 1]);
    expect(JSON.parse(header.__metadata__['pfc.network']).layers).toEqual([1, 2, 1, 1]);
    // OIHW element [o, i, kh, kw] equals the tfjs HWIO element [kh, kw, i, o].
    const [b0, b1] = header['conv1.weight'].data_offsets as [number, number];
    const oihw = new Float32Array(bytes.buffer.slice(bytes.byteOffset + 8 + n + b0, bytes.byteOffset + 8 + n + b1));
    const hwio = model.variable('conv1.weight').dataSync();
    for (const [o, i, kh, kw] of [[0, 0, 0, 0], [3, 1, 2, 0], [2, 2, 1, 2]] as const) {
      expect(oihw[((o * 3 + i) * 3 + kh) * 3 + kw]).toBe(hwio[((kh * 3 + kw) * 3 + i) * 4 + o]);
    }
    model.dispose();
  });

  it('loads a reference-style file without metadata by inferring the network from names and shapes', () => {
    const model = createBackbone(TINY, { seed: 4 });
    const path = join(dir, 'plain.safetensors');
    writeFileSync(path, encodeSafetensors(model.getStateDict()));
    const back = loadSafetensors(path);
    expect(back.config).toEqual(model.config);
    const mbf = createBackbone('mbf');
    expect(inferConfigFromState(mbf.getStateDict())).toEqual(mbf.config);
    mbf.dispose();
    model.dispose();
    back.dispose();
  });

  it('decodes F16, BF16 and F64 tensors into float32', () => {
    const header = {
      a: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
      b: { dtype: 'BF16', shape: [1], data_offsets: [4, 6] },
      c: { dtype: 'F64', shape: [1], data_offsets: [8, 16] },
    };
    const json = Buffer.from(JSON.stringify(header).padEnd(96, ' '));
    const data = Buffer.alloc(16);
    data.writeUInt16LE(0x3c00, 0); // 1.0
    data.writeUInt16LE(0xc000, 2); // -2.0
    data.writeUInt16LE(0x4040, 4); // bf16 3.0
    data.writeDoubleLE(0.5, 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const f = decodeSafetensors(Buffer.concat([len, json, data]));
    expect(Array.from(f.tensors.get('a')!.data as Float32Array)).toEqual([1, -2]);
    expect(Array.from(f.tensors.get('b')!.data as Float32Array)).toEqual([3]);
    expect(Array.from(f.tensors.get('c')!.data as Float32Array)).toEqual([0.5]);
  });

  it('rejects a missing or mis-shaped tensor with E_WEIGHTS naming it', () => {
    const model = createBackbone(TINY, { seed: 5 });
    const state = model.getStateDict();
    const missing = new Map(state);
    missing.delete('layer3.0.bn2.running_var');
    writeFileSync(join(dir, 'missing.safetensors'), encodeSafetensors(missing));
    expectCode(() => loadSafetensors(join(dir, 'missing.safetensors'), TINY), 'E_WEIGHTS', /missing tensor 'layer3\.0\.bn2\.running_var'/);
    const misshaped = new Map(state);
    misshaped.set('layer1.0.conv1.weight', { dtype: 'float32', shape: [4, 4, 1, 1], data: new Float32Array(16) });
    writeFileSync(join(dir, 'shape.safetensors'), encodeSafetensors(misshaped));
    expectCode(() => loadSafetensors(join(dir, 'shape.safetensors'), TINY), 'E_WEIGHTS', /'layer1\.0\.conv1\.weight' has shape \[4, 4, 1, 1\], expected \[4, 4, 3, 3\]/);
    const extra = new Map(state);
    extra.set('head.weight', { dtype: 'float32', shape: [1], data: new Float32Array(1) });
    writeFileSync(join(dir, 'extra.safetensors'), encodeSafetensors(extra));
    expectCode(() => loadSafetensors(join(dir, 'extra.safetensors'), TINY), 'E_WEIGHTS', /unexpected tensor 'head\.weight'/);
    const wrongNet = join(dir, 'net.safetensors');
    saveSafetensors(model, wrongNet);
    expectCode(() => loadSafetensors(wrongNet, { ...TINY, widths: [4, 6, 8, 16] }), 'E_WEIGHTS', /'layer4\.0\.conv1\.weight' has shape \[8, 8, 3, 3\], expected \[16, 8, 3, 3\]/);
    model.dispose();
  });

  it('rejects corrupt files with E_WEIGHTS naming the file and offset', () => {
    const good = encodeSafetensors(new Map([['w', { dtype: 'float32', shape: [2, 2], data: new Float32Array(4) }]]));
    expectCode(() => decodeSafetensors(good.subarray(0, 5), 'f'), 'E_WEIGHTS', /f: not a safetensors file: 5 bytes/);
    expectCode(() => decodeSafetensors(good.subarray(0, good.length - 4), 'f'), 'E_WEIGHTS', /'w': data_offsets \[0, 16\]/);
    const bad = Uint8Array.from(good);
    bad[8] = 0x20;
    bad[9] = 0x7b; // header now starts ' {' then broken
    bad[10] = 0x7b;
    expectCode(() => decodeSafetensors(bad, 'f'), 'E_WEIGHTS', /header is not valid JSON \(byte offset 8\)/);
    const huge = Uint8Array.from(good);
    new DataView(huge.buffer).setBigUint64(0, 1n << 40n, true);
    expectCode(() => decodeSafetensors(huge, 'f'), 'E_WEIGHTS', /header length/);
    expectCode(() => loadSafetensors(join(dir, 'nope.safetensors')), 'E_WEIGHTS', /cannot read/);
  });
});
