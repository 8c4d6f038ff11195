import { PfcError, initBackend } from '@pfc/core';
import * as protobuf from 'protobufjs';
import { join } from 'node:path';
import { createBackbone } from '../model';
import type { BackboneConfig } from '../arch';
import { exportOnnx, importOnnx } from './onnx';
import { expectFloatStateEqual, maxAbsDiff, ours, randomImages, randomiseBuffers, runOrt } from './parity.test-helpers';

const SMALL: BackboneConfig = { name: 'iresnet', layers: [1, 2, 1, 1], widths: [8, 16, 16, 32], embeddingSize: 16, inputSize: 32 };

beforeAll(async () => {
  await initBackend({ backend: 'wasm', log: null });
});

describe('ONNX export (wasm forward vs onnxruntime-node)', () => {
  it('a width-reduced iResNet matches onnxruntime within 1e-4 and re-imports exactly', async () => {
    const model = createBackbone(SMALL, { seed: 1 });
    randomiseBuffers(model, 2);
    const dims = [3, 3, 32, 32];
    const x = randomImages(3, 32, 3);
    const bytes = exportOnnx(model.config, model.getStateDict());
    expect(maxAbsDiff(ours(model, x, dims), await runOrt(bytes, x, dims))).toBeLessThan(1e-4);
    const imported = importOnnx(bytes);
    expect(imported.config).toEqual(model.config);
    expect(imported.folded).toBe(false);
    expectFloatStateEqual(model.getStateDict(), imported.state);
    model.dispose();
  });

  it('folds BatchNorm into convolutions on request; the folded graph and its import compute the same function', async () => {
    const model = createBackbone(SMALL, { seed: 4 });
    randomiseBuffers(model, 5);
    const dims = [2, 3, 32, 32];
    const x = randomImages(2, 32, 6);
    const folded = exportOnnx(model.config, model.getStateDict(), { foldBatchNorm: true });
    const reference = ours(model, x, dims);
    expect(maxAbsDiff(reference, await runOrt(folded, x, dims))).toBeLessThan(1e-4);
    const imp = importOnnx(folded);
    expect(imp.folded).toBe(true);
    const again = createBackbone(imp.config);
    again.loadStateDict(imp.state);
    expect(maxAbsDiff(reference, ours(again, x, dims))).toBeLessThan(1e-4);
    model.dispose();
    again.dispose();
  });

  it('MobileFaceNet (grouped and depthwise convolutions, GDC head) matches onnxruntime within 1e-4', async () => {
    const model = createBackbone({ name: 'mbf', blocks: [1, 1, 1, 1] }, { seed: 7 });
    randomiseBuffers(model, 8);
    const dims = [2, 3, 112, 112];
    const x = randomImages(2, 112, 9);
    const bytes = exportOnnx(model.config, model.getStateDict());
    expect(maxAbsDiff(ours(model, x, dims), await runOrt(bytes, x, dims))).toBeLessThan(1e-4);
    const imp = importOnnx(bytes);
    expect(imp.config).toEqual(model.config);
    expectFloatStateEqual(model.getStateDict(), imp.state);
    model.dispose();
  });

  it('infers other configurations from the graph alone (MobileFaceNet with a residual first stage, uneven iResNet depths, BN folded)', () => {
    for (const spec of [{ name: 'mbf', scale: 1, blocks: [2, 1, 2, 1], embeddingSize: 64 }, { name: 'iresnet', layers: [2, 3, 1, 2], widths: [8, 8, 16, 16], stemWidth: 4, embeddingSize: 8, inputSize: 56 }] as const) {
      const model = createBackbone(spec as BackboneConfig | string);
      for (const foldBatchNorm of [false, true]) {
        const imp = importOnnx(exportOnnx(model.config, model.getStateDict(), { foldBatchNorm }));
        expect(imp.config).toEqual(model.config);
      }
      model.dispose();
    }
  });

  it('declares input data [None, 3, S, S], opset 11 and state-dict initializer names', () => {
    const model = createBackbone(SMALL);
    const root = new protobuf.Root().loadSync(join(__dirname, 'onnx.proto'), { keepCase: true });
    const M = root.lookupType('onnx.ModelProto');
    const m = M.toObject(M.decode(exportOnnx(model.config, model.getStateDict())), { longs: Number }) as {
      opset_import: { version: number }[];
      graph: { input: { name: string; type: { tensor_type: { shape: { dim: { dim_param?: string; dim_value?: number }[] } } } }[]; initializer: { name: string; dims: number[] }[] };
    };
    expect(m.opset_import[0]!.version).toBe(11);
    expect(m.graph.input[0]!.name).toBe('data');
    expect(m.graph.input[0]!.type.tensor_type.shape.dim).toEqual([{ dim_param: 'None' }, { dim_value: 3 }, { dim_value: 32 }, { dim_value: 32 }]);
    const inits = new Map(m.graph.initializer.map((t) => [t.name, t.dims]));
    expect(inits.get('layer2.1.conv2.weight')).toEqual([16, 16, 3, 3]);
    expect(inits.get('fc.weight')).toEqual([16, 32 * 2 * 2]);
    expect(inits.get('layer1.0.prelu.weight')).toEqual([8, 1, 1]);
    model.dispose();
  });
});

describe('ONNX import errors', () => {
  function graphBytes(nodes: object[], inits: object[]): Uint8Array {
    const root = new protobuf.Root().loadSync(join(__dirname, 'onnx.proto'), { keepCase: true });
    const M = root.lookupType('onnx.ModelProto');
    return M.encode(M.fromObject({ ir_version: 6, opset_import: [{ version: 11 }], graph: { node: nodes, initializer: inits } })).finish();
  }
  const expectOnnxError = (fn: () => unknown, text: RegExp) => {
    let caught: unknown;
    try {
      fn();
    } catch (err) {
      caught = err;
    }
    expect(PfcError.is(caught, 'E_ONNX')).toBe(true);
    expect((caught as Error).message).toMatch(text);
  };

  it('says clearly when a graph is not an iResNet', () => {
    const w = { name: 'w', dims: [8, 3, 3, 3], data_type: 1, raw_data: new Uint8Array(8 * 27 * 4) };
    const conv = { op_type: 'Conv', input: ['data', 'w'], output: ['y'] };
    expectOnnxError(() => importOnnx(graphBytes([conv, { op_type: 'Relu', input: ['y'], output: ['z'] }], [w]), 'relu.onnx'), /relu\.onnx: not an iResNet or MobileFaceNet graph: 1 Conv nodes/);
    const five = [0, 1, 2, 3, 4].map((i) => ({ ...conv, input: [i ? `y${i - 1}` : 'data', 'w'], output: [`y${i}`] }));
    expectOnnxError(() => importOnnx(graphBytes(five, [w])), /not an iResNet or MobileFaceNet graph: no Gemm/);
    expectOnnxError(() => importOnnx(Uint8Array.from([0xff, 0xff, 0xff, 0x01, 0x02]), 'junk.onnx'), /junk\.onnx: not an ONNX model/);
  });

  it('rejects a truncated iResNet graph naming what is missing', () => {
    const model = createBackbone(SMALL);
    const root = new protobuf.Root().loadSync(join(__dirname, 'onnx.proto'), { keepCase: true });
    const M = root.lookupType('onnx.ModelProto');
    const m = M.decode(exportOnnx(model.config, model.getStateDict())) as unknown as { graph: { node: { op_type: string }[] } };
    const i = m.graph.node.map((n) => n.op_type).lastIndexOf('PRelu');
    m.graph.node.splice(i, 1);
    expectOnnxError(() => importOnnx(M.encode(m as unknown as protobuf.Message).finish()), /no PRelu node left for layer4\.0\.prelu/);
    model.dispose();
  });
});
