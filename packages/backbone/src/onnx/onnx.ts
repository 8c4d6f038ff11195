import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as protobuf from 'protobufjs';
import { PfcError } from '@pfc/core';
import { convOutSize, describeArch, resolveConfig, runArch } from '../arch';
import type { BackboneConfig, ConvSpec, Ops, ResolvedConfig } from '../arch';
import { BN_EPS } from '../model';
import type { StateDict, StateTensor } from '../model';

/**
 * ONNX export and import written against the official `onnx.proto` (vendored next to this file, MIT licence,
 * loaded at run time with protobufjs). The export mirrors the reference's `torch2onnx.py`: input `data`
 * [N, 3, S, S] NCHW float32 with a symbolic batch, BatchNorm in inference form and PRelu, initializers named by
 * state-dict keys. The import walks a graph's Conv/BatchNormalization/PRelu/Gemm nodes in order against the
 * architecture, so it also reads graphs whose BatchNorms were folded into the convolutions.
 */

interface OnnxTypes {
  ModelProto: protobuf.Type;
}

let cached: OnnxTypes | undefined;

/** Loads `onnx.proto` from the sources (`src/onnx`) or, from a build, `../src/onnx`. */
function onnxTypes(): OnnxTypes {
  if (cached) return cached;
  const candidates = [join(__dirname, 'onnx.proto'), join(__dirname, '..', 'src', 'onnx', 'onnx.proto'), join(__dirname, '..', '..', 'src', 'onnx', 'onnx.proto')];
  const file = candidates.find((p) => existsSync(p));
  if (!file) throw new PfcError('E_ONNX', `onnx.proto not found (looked in ${candidates.join(', ')})`);
  const root = new protobuf.Root().loadSync(file, { keepCase: true });
  cached = { ModelProto: root.lookupType('onnx.ModelProto') };
  return cached;
}

const FLOAT = 1;
const INT64 = 7;
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_INTS = 7;

interface AttrJson {
  name: string;
  type: number;
  f?: number;
  i?: number;
  ints?: number[];
}
interface NodeJson {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  attribute: AttrJson[];
}
interface TensorJson {
  name: string;
  dims: number[];
  data_type: number;
  raw_data: Uint8Array;
}

export interface ExportOnnxOptions {
  /** Fold each BatchNorm that directly follows a convolution into it (weight and a new `<conv>.bias`). Default false. */
  foldBatchNorm?: boolean;
  /** Opset (≥ 11; default 11, as the reference). */
  opset?: number;
  /** Name of the graph output (default `embedding`). */
  outputName?: string;
}

interface ExportValue {
  name: string;
  /** NCHW without batch, or [features]. */
  shape: number[];
  /** Set on a convolution's output while it may still absorb a following BatchNorm. */
  conv?: { node: NodeJson; weight: TensorJson; out: number };
}

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

/**
 * Encodes a backbone as an ONNX model (`Uint8Array` of a `ModelProto`). `state` is a PyTorch-layout state dict
 * (`model.getStateDict()`); `config` a network name or config. Inference semantics: BatchNorm uses the running
 * statistics, dropout is omitted. Throws `E_WEIGHTS` when a tensor is missing or mis-shaped.
 */
export function exportOnnx(config: string | BackboneConfig, state: StateDict, options: ExportOnnxOptions = {}): Uint8Array {
  const cfg = resolveConfig(config);
  const opset = options.opset ?? 11;
  if (!(Number.isInteger(opset) && opset >= 11)) throw new PfcError('E_ARGUMENT', `exportOnnx: opset must be an integer >= 11, got ${opset}`);
  const fold = options.foldBatchNorm ?? false;
  for (const p of describeArch(cfg).params) {
    const t = state.get(p.name);
    if (!t || t.shape.join() !== p.shape.join()) {
      throw new PfcError('E_WEIGHTS', `exportOnnx: tensor '${p.name}' ${t ? `has shape [${t.shape.join(', ')}]` : 'is missing'}, expected [${p.shape.join(', ')}]`, {
        details: { tensor: p.name },
      });
    }
  }
  const get = (name: string) => state.get(name)!.data as Float32Array;
  const nodes: NodeJson[] = [];
  const inits = new Map<string, TensorJson>();
  const addInit = (name: string, dims: number[], data: Float32Array) => {
    const t: TensorJson = { name, dims, data_type: FLOAT, raw_data: f32Bytes(data) };
    inits.set(name, t);
    return t;
  };
  let counter = 0;
  const node = (op: string, inputs: string[], attrs: AttrJson[], label: string): NodeJson => {
    const id = counter++;
    const n: NodeJson = { op_type: op, input: inputs, output: [`${label}_output_${id}`], name: `${op}_${label}_${id}`, attribute: attrs };
    nodes.push(n);
    return n;
  };
  const ints = (name: string, v: number[]): AttrJson => ({ name, type: ATTR_INTS, ints: v });
  const ops: Ops<ExportValue> = {
    conv(x, name, c) {
      const wName = `${name}.weight`;
      const weight = addInit(wName, state.get(wName)!.shape, get(wName));
      const n = node('Conv', [x.name, wName], [ints('dilations', [1, 1]), { name: 'group', type: ATTR_INT, i: c.groups }, ints('kernel_shape', [c.kernel, c.kernel]), ints('pads', [c.pad, c.pad, c.pad, c.pad]), ints('strides', [c.stride, c.stride])], name);
      const h = convOutSize(x.shape[1]!, c);
      const w = convOutSize(x.shape[2]!, c);
      return { name: n.output[0]!, shape: [c.out, h, w], conv: { node: n, weight, out: c.out } };
    },
    bn(x, name) {
      const [gamma, beta, mean, variance] = ['weight', 'bias', 'running_mean', 'running_var'].map((k) => get(`${name}.${k}`)) as [Float32Array, Float32Array, Float32Array, Float32Array];
      if (fold && x.conv) {
        const { node: cn, weight, out } = x.conv;
        const w = new Float32Array(weight.raw_data.buffer.slice(0));
        const per = w.length / out;
        const bias = new Float32Array(out);
        for (let o = 0; o < out; o++) {
          const s = gamma[o]! / Math.sqrt(variance[o]! + BN_EPS);
          for (let k = 0; k < per; k++) w[o * per + k] = w[o * per + k]! * s;
          bias[o] = beta[o]! - mean[o]! * s;
        }
        weight.raw_data = f32Bytes(w);
        const conv = cn.input[1]!.replace(/\.weight$/, '');
        addInit(`${conv}.bias`, [out], bias);
        cn.input.push(`${conv}.bias`);
        return { name: x.name, shape: x.shape };
      }
      const inputs = ['weight', 'bias', 'running_mean', 'running_var'].map((k) => {
        addInit(`${name}.${k}`, [gamma.length], get(`${name}.${k}`));
        return `${name}.${k}`;
      });
      const n = node('BatchNormalization', [x.name, ...inputs], [{ name: 'epsilon', type: ATTR_FLOAT, f: BN_EPS }, { name: 'momentum', type: ATTR_FLOAT, f: 0.9 }], name);
      return { name: n.output[0]!, shape: x.shape };
    },
    prelu(x, name) {
      const c = x.shape[0]!;
      addInit(`${name}.weight`, x.shape.length === 3 ? [c, 1, 1] : [c], get(`${name}.weight`));
      return { name: node('PRelu', [x.name, `${name}.weight`], [], name).output[0]!, shape: x.shape };
    },
    add(a, b) {
      return { name: node('Add', [a.name, b.name], [], 'add').output[0]!, shape: a.shape };
    },
    flatten(x) {
      return { name: node('Flatten', [x.name], [{ name: 'axis', type: ATTR_INT, i: 1 }], 'flatten').output[0]!, shape: [x.shape.reduce((a, b) => a * b, 1)] };
    },
    dropout: (x) => x,
    linear(x, name, out, bias) {
      addInit(`${name}.weight`, [out, x.shape[0]!], get(`${name}.weight`));
      const inputs = [x.name, `${name}.weight`];
      if (bias) {
        addInit(`${name}.bias`, [out], get(`${name}.bias`));
        inputs.push(`${name}.bias`);
      }
      const attrs: AttrJson[] = [{ name: 'alpha', type: ATTR_FLOAT, f: 1 }, { name: 'beta', type: ATTR_FLOAT, f: 1 }, { name: 'transB', type: ATTR_INT, i: 1 }];
      return { name: node('Gemm', inputs, attrs, name).output[0]!, shape: [out] };
    },
  };
  const S = cfg.inputSize;
  const out = runArch(cfg, ops, { name: 'data', shape: [3, S, S] });
  const outputName = options.outputName ?? 'embedding';
  const last = nodes.find((n) => n.output[0] === out.name)!;
  last.output[0] = outputName;
  const tensorType = (dims: (number | string)[]) => ({
    tensor_type: { elem_type: FLOAT, shape: { dim: dims.map((d) => (typeof d === 'string' ? { dim_param: d } : { dim_value: d })) } },
  });
  const model = {
    ir_version: 6,
    producer_name: '@pfc/backbone',
    producer_version: '0.1.0',
    opset_import: [{ domain: '', version: opset }],
    metadata_props: [{ key: 'pfc.network', value: JSON.stringify(cfg) }],
    graph: {
      name: 'pfc_backbone',
      node: nodes,
      initializer: [...inits.values()],
      input: [{ name: 'data', type: tensorType(['None', 3, S, S]) }],
      output: [{ name: outputName, type: tensorType(['None', out.shape[0]!]) }],
    },
  };
  const T = onnxTypes().ModelProto;
  return T.encode(T.fromObject(model)).finish();
}

// ----------------------------------------------------------------------------------------------------------------
// Import

interface DecodedNode {
  input: string[];
  output: string[];
  op_type: string;
  attribute: { name: string; i?: unknown; ints?: unknown[]; f?: number }[];
}
interface DecodedTensor {
  name: string;
  dims: unknown[];
  data_type: number;
  raw_data?: Uint8Array;
  float_data?: number[];
  int64_data?: unknown[];
  double_data?: number[];
}

const toNum = (v: unknown): number => (typeof v === 'number' ? v : v && typeof (v as { toNumber?: unknown }).toNumber === 'function' ? (v as { toNumber(): number }).toNumber() : Number(v));

/** What {@link importOnnx} recovered from a graph. */
export interface ImportedOnnx {
  config: ResolvedConfig;
  state: StateDict;
  /** Whether some BatchNorms were folded into convolutions (replaced by identity BatchNorms carrying the bias). */
  folded: boolean;
}

/** Nodes that compute the identity at inference (an exporter may leave them between layers). */
const PASS_THROUGH = new Set(['Identity', 'Dropout', 'Cast']);

/**
 * Reads an iResNet or MobileFaceNet ONNX graph (ours, the reference's `torch2onnx.py` export, or any
 * `torch.onnx.export` of the reference modules: with or without BatchNorm folding, initializers named by state-dict
 * keys or auto-named `onnx::Conv_123`, PRelu slopes through Unsqueeze, bias-free Linear as MatMul over a Transpose)
 * into a config and a PyTorch-layout state dict. The config is inferred from the convolution shapes, then the
 * architecture is walked along the graph's data flow from its input: each layer must be a node of the expected type
 * reading the previous layer's output, so node order and names do not matter, and a graph that is not such a
 * backbone is an `E_ONNX` error saying which layer did not match. A convolution whose BatchNorm was folded is loaded
 * with an identity BatchNorm (weight 1, running mean 0, running var 1 − eps) whose bias is the folded bias: the same
 * inference function, ready for fine-tuning. A convolution bias in front of a kept BatchNorm moves into its running
 * mean (exact).
 */
export function importOnnx(bytes: Uint8Array, source = '<buffer>'): ImportedOnnx {
  const fail = (msg: string) => new PfcError('E_ONNX', `${source}: ${msg}`, { details: { file: source } });
  let model: { graph?: { node?: DecodedNode[]; initializer?: DecodedTensor[]; input?: { name: string; type?: { tensor_type?: { shape?: { dim?: { dim_value?: unknown }[] } } } }[] } };
  try {
    model = onnxTypes().ModelProto.decode(bytes) as unknown as typeof model;
  } catch (err) {
    throw new PfcError('E_ONNX', `${source}: not an ONNX model: ${(err as Error).message}`, { cause: err, details: { file: source } });
  }
  const graph = model.graph;
  if (!graph || !graph.node || graph.node.length === 0) throw fail('not an ONNX model: no graph nodes');
  const tensors = new Map<string, DecodedTensor>();
  for (const t of graph.initializer ?? []) tensors.set(t.name, t);
  const producers = new Map<string, DecodedNode>();
  const consumers = new Map<string, DecodedNode[]>();
  for (const n of graph.node) {
    for (const o of n.output) producers.set(o, n);
    for (const i of n.input) {
      if (!consumers.has(i)) consumers.set(i, []);
      consumers.get(i)!.push(n);
    }
    if (n.op_type === 'Constant') {
      const a = n.attribute.find((x) => x.name === 'value') as unknown as { t?: DecodedTensor } | undefined;
      if (a?.t) tensors.set(n.output[0]!, a.t);
    }
  }
  const attr = (n: DecodedNode, name: string) => n.attribute.find((a) => a.name === name);
  const valueOf = (name: string, depth = 0): { dims: number[]; data: Float32Array } => {
    const t = tensors.get(name);
    if (t) return { dims: t.dims.map(toNum), data: tensorData(t, fail) };
    const p = producers.get(name);
    if (p && depth < 4 && ['Identity', 'Unsqueeze', 'Squeeze', 'Reshape', 'Cast'].includes(p.op_type)) return valueOf(p.input[0]!, depth + 1);
    if (p && depth < 4 && p.op_type === 'Transpose') {
      // PyTorch exports a bias-free Linear as MatMul(x, Transpose(weight)) when constants are not folded.
      const v = valueOf(p.input[0]!, depth + 1);
      const perm = (attr(p, 'perm')?.ints ?? [1, 0]).map(toNum);
      if (v.dims.length === 2 && perm.join() === '1,0') {
        const [r, c] = v.dims as [number, number];
        const data = new Float32Array(r * c);
        for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) data[j * r + i] = v.data[i * c + j]!;
        return { dims: [c, r], data };
      }
    }
    throw fail(`tensor '${name}' is not a constant (initializer) but the architecture needs its value`);
  };
  const isConstant = (name: string) => {
    try {
      valueOf(name);
      return true;
    } catch {
      return false;
    }
  };
  const convs = graph.node.filter((n) => n.op_type === 'Conv');
  // With `keep_initializers_as_inputs` the weights are graph inputs too: the image is the input that is not a weight.
  const dataInput = (graph.input ?? []).find((i) => !tensors.has(i.name));
  const cfg = inferConfig(convs, graph.node, valueOf, fail, dataInput?.type?.tensor_type?.shape?.dim);

  const used = new Set<DecodedNode>();
  /** `value` and the names it reaches through identity-like nodes. */
  const aliases = (value: string): Set<string> => {
    const out = new Set([value]);
    for (const v of out) for (const n of consumers.get(v) ?? []) if (PASS_THROUGH.has(n.op_type) && n.input[0] === v && n.output[0]) out.add(n.output[0]);
    return out;
  };
  /** The unused node of one of `opTypes` whose data input is `value` (for Add: either input). */
  const next = (value: string, opTypes: readonly string[]): DecodedNode | undefined => {
    const names = aliases(value);
    for (const v of names) {
      for (const n of consumers.get(v) ?? []) {
        if (used.has(n) || !opTypes.includes(n.op_type)) continue;
        if (n.op_type === 'Add' ? n.input.includes(v) : n.input[0] === v) return n;
      }
    }
    return undefined;
  };
  const take = (value: string, opTypes: readonly string[], what: string): DecodedNode => {
    const n = next(value, opTypes);
    if (!n) {
      const readers = [...aliases(value)].flatMap((v) => (consumers.get(v) ?? []).filter((c) => !PASS_THROUGH.has(c.op_type) && !used.has(c)).map((c) => c.op_type));
      const feeds = readers.length ? `it feeds ${[...new Set(readers)].join('/')}` : 'nothing else reads it';
      throw fail(`${what}: no ${opTypes.join('/')} node reads '${value}' (${feeds}) in ${describe(cfg)}`);
    }
    used.add(n);
    return n;
  };
  const state: StateDict = new Map();
  const f32 = (shape: number[], data: Float32Array): StateTensor => ({ dtype: 'float32', shape, data });
  let folded = false;
  type V = { name: string; c: number; h: number; w: number; bias?: Float32Array } | { name: string; f: number; bias?: Float32Array };
  const ops: Ops<V> = {
    conv(x, name, c: ConvSpec) {
      if (!('c' in x)) throw fail(`${name}: convolution on a vector`);
      const n = take(x.name, ['Conv'], name);
      const w = valueOf(n.input[1]!);
      const expect = [c.out, x.c / c.groups, c.kernel, c.kernel];
      if (w.dims.join() !== expect.join()) throw fail(`${name}: Conv weight has shape [${w.dims.join(', ')}], expected [${expect.join(', ')}] for ${describe(cfg)}`);
      const group = toNum(attr(n, 'group')?.i ?? 1);
      const strides = (attr(n, 'strides')?.ints ?? [1, 1]).map(toNum);
      const pads = (attr(n, 'pads')?.ints ?? [0, 0, 0, 0]).map(toNum);
      if (group !== c.groups || strides[0] !== c.stride || pads.some((p) => p !== c.pad)) {
        throw fail(`${name}: Conv has group ${group}, strides [${strides.join(', ')}], pads [${pads.join(', ')}]; expected group ${c.groups}, stride ${c.stride}, pad ${c.pad}`);
      }
      state.set(`${name}.weight`, f32(expect, w.data));
      const bias = n.input[2] ? valueOf(n.input[2]).data : undefined;
      return { name: n.output[0]!, c: c.out, h: convOutSize(x.h, c), w: convOutSize(x.w, c), bias };
    },
    bn(x, name) {
      const C = 'c' in x ? x.c : x.f;
      const n = next(x.name, ['BatchNormalization']);
      const out = (v: string): V => ('c' in x ? { name: v, c: x.c, h: x.h, w: x.w } : { name: v, f: x.f });
      state.set(`${name}.num_batches_tracked`, { dtype: 'int64', shape: [], data: BigInt64Array.of(0n) });
      if (!n && x.bias) {
        // Folded into the preceding Conv/Gemm: an identity BatchNorm carries the bias.
        folded = true;
        state.set(`${name}.weight`, f32([C], new Float32Array(C).fill(1)));
        state.set(`${name}.bias`, f32([C], Float32Array.from(x.bias)));
        state.set(`${name}.running_mean`, f32([C], new Float32Array(C)));
        state.set(`${name}.running_var`, f32([C], new Float32Array(C).fill(1 - BN_EPS)));
        return out(x.name);
      }
      const node = take(x.name, ['BatchNormalization'], name);
      const keys = ['weight', 'bias', 'running_mean', 'running_var'];
      for (let i = 0; i < 4; i++) {
        const v = valueOf(node.input[i + 1]!);
        if (v.data.length !== C) throw fail(`${name}: BatchNormalization ${keys[i]} has ${v.data.length} values, expected ${C}`);
        let data = v.data;
        // BN(y + b) with running mean μ is BN(y) with running mean μ − b (the reference's layers have no such bias).
        if (keys[i] === 'running_mean' && x.bias) data = data.map((m, j) => m - x.bias![j]!);
        state.set(`${name}.${keys[i]}`, f32([C], data));
      }
      const eps = attr(node, 'epsilon')?.f ?? 1e-5;
      if (Math.abs(eps - BN_EPS) > 1e-9) throw fail(`${name}: BatchNormalization epsilon ${eps}, expected ${BN_EPS}`);
      return out(node.output[0]!);
    },
    prelu(x, name) {
      const n = take(x.name, ['PRelu'], name);
      const C = 'c' in x ? x.c : x.f;
      const v = valueOf(n.input[1]!);
      if (v.data.length !== C) throw fail(`${name}: PRelu slope has ${v.data.length} values, expected ${C}`);
      state.set(`${name}.weight`, f32([C], v.data));
      return { ...x, name: n.output[0]! };
    },
    add(a, b) {
      const other = aliases(b.name);
      const n = next(a.name, ['Add']);
      if (!n || !n.input.some((i) => other.has(i))) throw fail(`residual add: no Add node reads both '${a.name}' and '${b.name}' in ${describe(cfg)}`);
      used.add(n);
      return { ...a, name: n.output[0]! };
    },
    flatten(x) {
      if (!('c' in x)) return x;
      const n = next(x.name, ['Flatten', 'Reshape', 'Squeeze']);
      if (n) used.add(n);
      return { name: n ? n.output[0]! : x.name, f: x.c * x.h * x.w };
    },
    dropout: (x) => x,
    linear(x, name, out, bias) {
      if ('c' in x) throw fail(`${name}: linear layer on a feature map`);
      const n = take(x.name, ['Gemm', 'MatMul'], name);
      const w = valueOf(n.input[1]!);
      const transB = n.op_type === 'Gemm' ? toNum(attr(n, 'transB')?.i ?? 0) : 0;
      if (w.data.length !== out * x.f) throw fail(`${name}: ${n.op_type} weight has shape [${w.dims.join(', ')}], expected [${out}, ${x.f}]`);
      if (n.op_type === 'Gemm' && toNum(attr(n, 'transA')?.i ?? 0) !== 0) throw fail(`${name}: Gemm with transA = 1`);
      const alpha = n.op_type === 'Gemm' ? (attr(n, 'alpha')?.f ?? 1) : 1;
      const beta = n.op_type === 'Gemm' ? (attr(n, 'beta')?.f ?? 1) : 1;
      const data = new Float32Array(out * x.f);
      // PyTorch's [out, in]: as stored with transB, else transposed from [in, out].
      if (transB) for (let k = 0; k < data.length; k++) data[k] = alpha * w.data[k]!;
      else for (let i = 0; i < x.f; i++) for (let o = 0; o < out; o++) data[o * x.f + i] = alpha * w.data[i * out + o]!;
      state.set(`${name}.weight`, f32([out, x.f], data));
      let b: Float32Array | undefined;
      let result = n.output[0]!;
      if (n.op_type === 'Gemm' && n.input[2]) b = valueOf(n.input[2]).data.map((v) => beta * v);
      if (n.op_type === 'MatMul') {
        const add = next(result, ['Add']);
        const c = add?.input.find((i) => !aliases(result).has(i));
        if (add && c && isConstant(c)) {
          used.add(add);
          b = valueOf(c).data;
          result = add.output[0]!;
        }
      }
      if (b && b.length !== out) throw fail(`${name}: bias has ${b.length} values, expected ${out}`);
      if (bias) {
        state.set(`${name}.bias`, f32([out], b ?? new Float32Array(out)));
        return { name: result, f: out };
      }
      return { name: result, f: out, bias: b };
    },
  };
  const input = dataInput?.name ?? convs[0]!.input[0]!;
  runArch(cfg, ops, { name: input, c: 3, h: cfg.inputSize, w: cfg.inputSize });
  const kinds = ['Conv', 'BatchNormalization', 'PRelu', 'Gemm', 'MatMul'];
  const left = graph.node.filter((n) => kinds.includes(n.op_type) && !used.has(n));
  if (left.length) {
    const byType = kinds.map((k) => [k, left.filter((n) => n.op_type === k).length] as const).filter(([, c]) => c > 0);
    throw fail(`graph has ${byType.map(([k, c]) => `${c} ${k}`).join(', ')} node(s) more than ${describe(cfg)}, first unused: '${left[0]!.output[0]}'`);
  }
  return { config: cfg, state, folded };
}

function describe(cfg: ResolvedConfig): string {
  return cfg.name === 'mbf' ? `mbf(scale ${cfg.scale}, blocks [${cfg.blocks.join(',')}])` : `iresnet(layers [${cfg.layers.join(',')}], widths [${cfg.widths.join(',')}])`;
}

function tensorData(t: DecodedTensor, fail: (m: string) => Error): Float32Array {
  if (t.raw_data && t.raw_data.length > 0) {
    const raw = t.raw_data;
    const copy = new Uint8Array(raw.length);
    copy.set(raw);
    if (t.data_type === FLOAT) return new Float32Array(copy.buffer);
    if (t.data_type === 11) return Float32Array.from(new Float64Array(copy.buffer));
    if (t.data_type === INT64) return Float32Array.from(new BigInt64Array(copy.buffer), (v) => Number(v));
    throw fail(`tensor '${t.name}' has ONNX data type ${t.data_type}; float32, float64 or int64 expected`);
  }
  if (t.float_data && t.float_data.length) return Float32Array.from(t.float_data);
  if (t.double_data && t.double_data.length) return Float32Array.from(t.double_data);
  if (t.int64_data && t.int64_data.length) return Float32Array.from(t.int64_data, toNum);
  return new Float32Array(0);
}

/** Infers an iResNet/MobileFaceNet config from the Conv nodes; `E_ONNX` when they fit neither. */
function inferConfig(
  convs: DecodedNode[],
  allNodes: DecodedNode[],
  valueOf: (n: string) => { dims: number[]; data: Float32Array },
  fail: (m: string) => Error,
  inputDims: { dim_value?: unknown }[] | undefined,
): ResolvedConfig {
  const notBackbone = (why: string) => fail(`not an iResNet or MobileFaceNet graph: ${why}`);
  if (convs.length < 4) throw notBackbone(`${convs.length} Conv nodes`);
  const shapes = convs.map((n) => {
    let dims: number[];
    try {
      dims = valueOf(n.input[1]!).dims;
    } catch {
      throw notBackbone(`Conv weight '${n.input[1]}' is not a constant`);
    }
    const group = toNum(n.attribute.find((a) => a.name === 'group')?.i ?? 1);
    const stride = toNum(n.attribute.find((a) => a.name === 'strides')?.ints?.[0] ?? 1);
    return { dims, group, stride };
  });
  const stem = shapes[0]!;
  if (stem.dims.length !== 4 || stem.dims[1] !== 3) throw notBackbone(`the first Conv has weight [${stem.dims.join(', ')}], expected [C, 3, k, k]`);
  const gemm = allNodes.find((n) => n.op_type === 'Gemm' || n.op_type === 'MatMul');
  if (!gemm) throw notBackbone('no Gemm/MatMul (fully connected) node');
  const fcDims = valueOf(gemm.input[1]!).dims;
  const transB = gemm.op_type === 'Gemm' && toNum(gemm.attribute.find((a) => a.name === 'transB')?.i ?? 0) === 1;
  const embeddingSize = transB ? fcDims[0]! : fcDims[1]!;
  const grouped = shapes.some((s) => s.group > 1);
  if (grouped) {
    // MobileFaceNet: stem 3x3 s2 to 64·scale channels; count residual DepthWise units per stage by their 1x1 convs.
    const scale = stem.dims[0]! / 64;
    if (!Number.isInteger(scale) || stem.dims[2] !== 3 || stem.stride !== 2) throw notBackbone(`grouped convolutions but the stem is [${stem.dims.join(', ')}] stride ${stem.stride}`);
    const dwStrides = shapes.filter((s) => s.group > 1 && s.dims[2] === 3).map((s) => s.stride);
    // Stage boundaries are the stride-2 depthwise convs (3 of them); blocks[0] == 1 means a single grouped ConvBlock.
    const counts = [0, 0, 0, 0];
    let stage = 0;
    for (const s of dwStrides) {
      if (s === 2) stage++;
      else counts[stage]!++;
    }
    // blocks[0] == 1 is the single grouped ConvBlock (a Residual of one block does not occur in the reference).
    return resolveConfig({ name: 'mbf', scale, blocks: counts, embeddingSize });
  }
  // iResNet: after the stem, blocks of two 3x3 convs (the second carries the stage's stride 2 in a first block) and
  // a 1x1 projection shortcut in each stage's first block.
  const threes = shapes.slice(1).filter((s) => s.dims[2] === 3 && s.dims[3] === 3);
  if (shapes.slice(1).some((s) => !(s.dims[2] === 3 || s.dims[2] === 1))) throw notBackbone('Conv kernels other than 3x3 and 1x1');
  if (threes.length % 2 !== 0) throw notBackbone(`${threes.length} 3x3 convolutions after the stem (iResNet blocks have two)`);
  const layers: number[] = [];
  const widths: number[] = [];
  for (let i = 0; i < threes.length; i += 2) {
    const second = threes[i + 1]!;
    if (second.stride === 2 || layers.length === 0) {
      layers.push(0);
      widths.push(second.dims[0]!);
    }
    layers[layers.length - 1]!++;
  }
  if (layers.length !== 4) throw notBackbone(`${layers.length} stride-2 stages, iResNet has 4`);
  const headC = widths[3]!;
  const fcIn = transB ? fcDims[1]! : fcDims[0]!;
  const side = Math.round(Math.sqrt(fcIn / headC));
  if (side * side * headC !== fcIn) throw notBackbone(`FC input ${fcIn} is not ${headC}·s² for a square head`);
  let inputSize = Number(inputDims?.[2]?.dim_value ? toNum(inputDims[2].dim_value) : 0);
  if (!inputSize) inputSize = side === 7 ? 112 : side * 16;
  try {
    const cfg = resolveConfig({ name: 'iresnet', layers, widths, stemWidth: stem.dims[0]!, embeddingSize, inputSize });
    const head = describeArch(cfg).headShape;
    if (head[1] !== side) throw new Error(`input ${inputSize} gives a ${head[1]}x${head[2]} head, the FC expects ${side}x${side}`);
    return cfg;
  } catch (err) {
    throw notBackbone((err as Error).message);
  }
}
