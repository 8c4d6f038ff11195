import { PfcError, Rng, initBackend } from '@pfc/core';
import * as protobuf from 'protobufjs';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createBackbone } from '../model';
import type { BackboneConfig } from '../arch';
import { loadOnnx } from '../weights';
import { exportOnnx, importOnnx } from './onnx';
import { expectFloatStateEqual, maxAbsDiff, ours, randomImages, randomiseBuffers, runOrt } from './parity.test-helpers';

const SMALL: BackboneConfig = { name: 'iresnet', layers: [1, 2, 1, 1], widths: [8, 16, 16, 32], embeddingSize: 16, inputSize: 32 };
/** A third-party MobileFaceNet (128-d, ReLU6, 1×1-conv head): not the reference's mbf, so import must refuse it. */
const REAL_MODEL = join(__dirname, '../../../../../shared/realdata/models/mobilefacenet_128d.onnx');

interface GraphJson {
  node: { op_type: string; input: string[]; output: string[]; name?: string; attribute?: object[] }[];
  initializer: { name: string; dims: number[]; data_type: number; raw_data: Uint8Array }[];
  input: { name: string }[];
  output: { name: string }[];
}
function onnxModelType(): protobuf.Type {
  return new protobuf.Root().loadSync(join(__dirname, 'onnx.proto'), { keepCase: true }).lookupType('onnx.ModelProto');
}
/** Decodes, edits and re-encodes a model: the test's graphs are made by our own writer, then rewritten. */
function editGraph(bytes: Uint8Array, edit: (g: GraphJson) => void): Uint8Array {
  const M = onnxModelType();
  const m = M.toObject(M.decode(bytes), { longs: Number }) as { graph: GraphJson };
  for (const n of m.graph.node) n.input ??= [];
  edit(m.graph);
  return M.encode(M.fromObject(m)).finish();
}

/**
 * Rewrites a BN-folded export of ours the way `torch.onnx.export` of the reference module (eval mode, constant
 * folding) writes it: fused Conv weights and biases auto-named `onnx::Conv_<n>`, every intermediate value a number,
 * PRelu slopes stored [C] behind an Unsqueeze (opset 11 `axes`), an Identity before the Flatten. Optionally puts each
 * projection shortcut's Conv before its block's main path (still a topological order, as graph rewriters produce).
 */
function torchStyle(bytes: Uint8Array, shortcutFirst: boolean): Uint8Array {
  return editGraph(bytes, (g) => {
    let k = 100;
    const rename = new Map<string, string>();
    for (const n of g.node) for (const o of n.output) if (o !== g.output[0]!.name) rename.set(o, String(k++));
    for (const t of g.initializer) if (g.node.some((n) => n.op_type === 'Conv' && n.input.slice(1).includes(t.name))) rename.set(t.name, `onnx::Conv_${k++}`);
    for (const t of g.initializer) t.name = rename.get(t.name) ?? t.name;
    for (const n of g.node) {
      n.input = n.input.map((i) => rename.get(i) ?? i);
      n.output = n.output.map((o) => rename.get(o) ?? o);
      n.name = `${n.op_type}_${k++}`;
    }
    const nodes: GraphJson['node'] = [];
    for (const n of g.node) {
      if (n.op_type === 'PRelu') {
        const slope = g.initializer.find((t) => t.name === n.input[1])!;
        slope.dims = [slope.dims[0]!];
        const unsqueezed = `onnx::PRelu_${k++}`;
        nodes.push({ op_type: 'Unsqueeze', name: `Unsqueeze_${k++}`, input: [slope.name], output: [unsqueezed], attribute: [{ name: 'axes', type: 7, ints: [1, 2] }] });
        n.input[1] = unsqueezed;
      }
      if (n.op_type === 'Flatten') {
        const id = String(k++);
        nodes.push({ op_type: 'Identity', name: `Identity_${k++}`, input: [n.input[0]!], output: [id] });
        n.input[0] = id;
      }
      nodes.push(n);
    }
    if (shortcutFirst) {
      // A shortcut Conv reads its block's input, which the block's first BatchNorm also reads: hoist it above that.
      for (const conv of nodes.filter((n) => n.op_type === 'Conv' && n.attribute!.some((a) => (a as { name: string; ints?: number[] }).name === 'kernel_shape' && (a as { ints: number[] }).ints[0] === 1))) {
        nodes.splice(nodes.indexOf(conv), 1);
        nodes.splice(nodes.findIndex((n) => n.op_type === 'BatchNormalization' && n.input[0] === conv.input[0]), 0, conv);
      }
    }
    g.node = nodes;
  });
}

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

  it('imports a torch.onnx.export-style iResNet (BN folded into auto-named Convs, PRelu via Unsqueeze, any topological order) to the same function', async () => {
    const model = createBackbone(SMALL, { seed: 21 });
    randomiseBuffers(model, 22);
    const dims = [2, 3, 32, 32];
    const x = randomImages(2, 32, 23);
    const reference = ours(model, x, dims);
    for (const shortcutFirst of [false, true]) {
      const bytes = torchStyle(exportOnnx(model.config, model.getStateDict(), { foldBatchNorm: true }), shortcutFirst);
      // The rewritten graph is valid ONNX computing the same function (onnxruntime), so the import has a real target.
      expect(maxAbsDiff(reference, await runOrt(bytes, x, dims))).toBeLessThan(1e-4);
      const imp = importOnnx(bytes, 'torch.onnx');
      expect(imp.config).toEqual(model.config);
      expect(imp.folded).toBe(true);
      // Tensors that torch keeps under their state-dict names come back bit-exact; the folded ones as a function.
      const kept = new Map([...model.getStateDict()].filter(([n, t]) => t.dtype === 'float32' && /\.bn1\.|^bn2\.|^features\.|^fc\.|prelu/.test(n)));
      expect(kept.size).toBeGreaterThan(20);
      expectFloatStateEqual(kept, imp.state);
      const again = createBackbone(imp.config);
      again.loadStateDict(imp.state);
      // Folding rounds each weight once (w·γ/√(σ²+ε)): 1e-4 as the other folded-graph checks.
      expect(maxAbsDiff(reference, ours(again, x, dims))).toBeLessThan(1e-4);
      again.dispose();
    }
    model.dispose();
  });

  it('imports a bias-free Linear exported as MatMul over a Transpose (MobileFaceNet GDC head) exactly', async () => {
    const model = createBackbone({ name: 'mbf', blocks: [1, 1, 1, 1], embeddingSize: 64 }, { seed: 24 });
    randomiseBuffers(model, 25);
    const bytes = editGraph(exportOnnx(model.config, model.getStateDict()), (g) => {
      const i = g.node.findIndex((n) => n.op_type === 'Gemm');
      const gemm = g.node[i]!;
      g.node.splice(i, 1, { op_type: 'Transpose', input: [gemm.input[1]!], output: ['w_t'], attribute: [{ name: 'perm', type: 7, ints: [1, 0] }] }, { op_type: 'MatMul', input: [gemm.input[0]!, 'w_t'], output: gemm.output });
    });
    const dims = [1, 3, 112, 112];
    const x = randomImages(1, 112, 26);
    expect(maxAbsDiff(ours(model, x, dims), await runOrt(bytes, x, dims))).toBeLessThan(1e-4);
    const imp = importOnnx(bytes);
    expect(imp.config).toEqual(model.config);
    expectFloatStateEqual(model.getStateDict(), imp.state);
    model.dispose();
  });

  it('moves a convolution bias in front of a kept BatchNorm into its running mean (same function)', async () => {
    const model = createBackbone(SMALL, { seed: 27 });
    randomiseBuffers(model, 28);
    const rng = new Rng(29);
    const bias = Float32Array.from({ length: 8 }, () => rng.normal(0, 0.5));
    const bytes = editGraph(exportOnnx(model.config, model.getStateDict()), (g) => {
      g.initializer.push({ name: 'conv1.bias', dims: [8], data_type: 1, raw_data: new Uint8Array(bias.buffer.slice(0)) });
      g.node.find((n) => n.op_type === 'Conv')!.input.push('conv1.bias');
    });
    const dims = [2, 3, 32, 32];
    const x = randomImages(2, 32, 30);
    const imp = importOnnx(bytes);
    expect(imp.folded).toBe(false);
    const again = createBackbone(imp.config);
    again.loadStateDict(imp.state);
    expect(maxAbsDiff(await runOrt(bytes, x, dims), ours(again, x, dims))).toBeLessThan(1e-4);
    const mean = model.getStateDict().get('bn1.running_mean')!.data as Float32Array;
    expect(Array.from(imp.state.get('bn1.running_mean')!.data as Float32Array)).toEqual(Array.from(mean, (m, j) => Math.fround(m - bias[j]!)));
    model.dispose();
    again.dispose();
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

  (existsSync(REAL_MODEL) ? it : it.skip)('refuses a real third-party MobileFaceNet-128d (ReLU6, no FC layer) with E_ONNX saying why', () => {
    expectOnnxError(() => loadOnnx(REAL_MODEL), /mobilefacenet_128d\.onnx: not an iResNet or MobileFaceNet graph: no Gemm\/MatMul \(fully connected\) node/);
  });

  it('rejects a graph whose layers are not wired as the architecture, naming the layer', () => {
    const model = createBackbone(SMALL);
    // Feed layer1.0.conv1 the block input instead of its BatchNorm's output: every op count is still right.
    const bytes = editGraph(exportOnnx(model.config, model.getStateDict()), (g) => {
      const conv = g.node.find((n) => n.op_type === 'Conv' && n.input[1] === 'layer1.0.conv1.weight')!;
      const bn = g.node.find((n) => n.output[0] === conv.input[0])!;
      conv.input[0] = bn.input[0]!;
    });
    expectOnnxError(() => importOnnx(bytes), /layer1\.0\.conv1: no Conv node reads '.*' \(nothing else reads it\)/);
    model.dispose();
  });

  it('rejects a truncated iResNet graph naming what is missing', () => {
    const model = createBackbone(SMALL);
    const root = new protobuf.Root().loadSync(join(__dirname, 'onnx.proto'), { keepCase: true });
    const M = root.lookupType('onnx.ModelProto');
    const m = M.decode(exportOnnx(model.config, model.getStateDict())) as unknown as { graph: { node: { op_type: string }[] } };
    const i = m.graph.node.map((n) => n.op_type).lastIndexOf('PRelu');
    m.graph.node.splice(i, 1);
    expectOnnxError(() => importOnnx(M.encode(m as unknown as protobuf.Message).finish()), /layer4\.0\.prelu: no PRelu node reads '.*' \(nothing else reads it\)/);
    model.dispose();
  });
});
