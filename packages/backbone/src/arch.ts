import { PfcError } from '@pfc/core';

/**
 * One description of each architecture, written once against {@link Ops} and interpreted three ways: by shape
 * (parameter list, MACs), by tfjs tensors (forward/backward) and by ONNX nodes (export/import). Layer names are the
 * reference's PyTorch state-dict prefixes, so every interpreter agrees with the reference on names and order.
 */

/** A configurable iResNet (the reference's `IResNet` with `IBasicBlock`, optionally narrower and shallower). */
export interface IResNetConfig {
  name: 'iresnet';
  /** Blocks per stage, four stages (r18 `[2,2,2,2]`, r50 `[3,4,14,3]`...). */
  layers: readonly number[];
  /** Output channels per stage (reference `[64,128,256,512]`). */
  widths?: readonly number[];
  /** Stem channels (reference 64); default `widths[0]`. */
  stemWidth?: number;
  /** Embedding dimension (reference `num_features`, 512). */
  embeddingSize?: number;
  /** Square input side in pixels (reference 112 → 7×7 head; 56 → 4×4). */
  inputSize?: number;
  /** Dropout probability before the FC (reference `train_v2.py` passes 0). */
  dropout?: number;
}

/** The reference's MobileFaceNet (`get_mbf`: scale 2, blocks (1,4,6,2); `get_mbf_large`: scale 4, (2,8,12,4)). */
export interface MobileFaceNetConfig {
  name: 'mbf';
  blocks?: readonly number[];
  scale?: number;
  embeddingSize?: number;
}

export type BackboneConfig = IResNetConfig | MobileFaceNetConfig;

/** A config with every default filled in. */
export type ResolvedConfig =
  | (Required<IResNetConfig> & { widths: number[]; layers: number[] })
  | (Required<MobileFaceNetConfig> & { blocks: number[]; inputSize: 112 });

/** Named reference networks accepted by {@link resolveConfig}. */
export const NETWORK_NAMES = ['r18', 'r34', 'r50', 'r100', 'r200', 'mbf', 'mbf_large'] as const;
export type NetworkName = (typeof NETWORK_NAMES)[number];

const IRESNET_LAYERS: Record<string, number[]> = {
  r18: [2, 2, 2, 2],
  r34: [3, 4, 6, 3],
  r50: [3, 4, 14, 3],
  r100: [3, 13, 30, 3],
  r200: [6, 26, 60, 6],
};

/**
 * Resolves a network name (`r18`…`r200`, `mbf`, `mbf_large`) or a config into a full config.
 * Throws `E_ARGUMENT` for unknown names or invalid fields.
 */
export function resolveConfig(spec: NetworkName | string | BackboneConfig): ResolvedConfig {
  if (typeof spec === 'string') {
    const layers = IRESNET_LAYERS[spec];
    if (layers) return resolveConfig({ name: 'iresnet', layers });
    if (spec === 'mbf') return resolveConfig({ name: 'mbf' });
    if (spec === 'mbf_large') return resolveConfig({ name: 'mbf', blocks: [2, 8, 12, 4], scale: 4 });
    throw new PfcError('E_ARGUMENT', `unknown network ${JSON.stringify(spec)}; valid names are ${NETWORK_NAMES.join(', ')} or a config object`, {
      details: { network: spec },
    });
  }
  const bad = (field: string, value: unknown, expected: string) =>
    new PfcError('E_ARGUMENT', `backbone config: '${field}' must be ${expected}, got ${JSON.stringify(value)}`, { details: { field, value } });
  const posInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v > 0;
  if (spec.name === 'iresnet') {
    const widths = [...(spec.widths ?? [64, 128, 256, 512])];
    const layers = [...spec.layers];
    if (layers.length !== 4 || !layers.every(posInt)) throw bad('layers', spec.layers, 'four positive integers');
    if (widths.length !== 4 || !widths.every(posInt)) throw bad('widths', spec.widths, 'four positive integers');
    const stemWidth = spec.stemWidth ?? widths[0]!;
    const embeddingSize = spec.embeddingSize ?? 512;
    const inputSize = spec.inputSize ?? 112;
    const dropout = spec.dropout ?? 0;
    if (!posInt(stemWidth)) throw bad('stemWidth', stemWidth, 'a positive integer');
    if (!posInt(embeddingSize)) throw bad('embeddingSize', embeddingSize, 'a positive integer');
    if (!posInt(inputSize) || inputSize < 16) throw bad('inputSize', inputSize, 'an integer >= 16');
    if (!(dropout >= 0 && dropout < 1)) throw bad('dropout', dropout, 'in [0, 1)');
    return { name: 'iresnet', layers, widths, stemWidth, embeddingSize, inputSize, dropout };
  }
  if (spec.name === 'mbf') {
    const blocks = [...(spec.blocks ?? [1, 4, 6, 2])];
    const scale = spec.scale ?? 2;
    const embeddingSize = spec.embeddingSize ?? 512;
    if (blocks.length !== 4 || !blocks.every(posInt)) throw bad('blocks', spec.blocks, 'four positive integers');
    if (!posInt(scale)) throw bad('scale', scale, 'a positive integer');
    if (!posInt(embeddingSize)) throw bad('embeddingSize', embeddingSize, 'a positive integer');
    return { name: 'mbf', blocks, scale, embeddingSize, inputSize: 112 };
  }
  throw bad('name', (spec as { name?: unknown }).name, "'iresnet' or 'mbf'");
}

/** A convolution as the reference declares it (PyTorch `Conv2d` arguments). */
export interface ConvSpec {
  out: number;
  kernel: number;
  stride: number;
  pad: number;
  groups: number;
}

/** The layer vocabulary the architectures are written in; `T` is whatever an interpreter passes along. */
export interface Ops<T> {
  conv(x: T, name: string, spec: ConvSpec): T;
  /** BatchNorm over the channel axis (2d on images, 1d on vectors); `frozenWeight`: affine weight fixed to 1. */
  bn(x: T, name: string, frozenWeight?: boolean): T;
  prelu(x: T, name: string): T;
  add(a: T, b: T): T;
  /** Flatten to [N, features] in PyTorch's NCHW (C, H, W) order. */
  flatten(x: T): T;
  dropout(x: T, p: number): T;
  linear(x: T, name: string, out: number, bias: boolean): T;
}

const conv = (out: number, kernel: number, stride: number, pad: number, groups = 1): ConvSpec => ({ out, kernel, stride, pad, groups });

function iresnetForward<T>(cfg: Extract<ResolvedConfig, { name: 'iresnet' }>, ops: Ops<T>, input: T): T {
  let x = ops.conv(input, 'conv1', conv(cfg.stemWidth, 3, 1, 1));
  x = ops.bn(x, 'bn1');
  x = ops.prelu(x, 'prelu');
  let inplanes = cfg.stemWidth;
  for (let s = 0; s < 4; s++) {
    const planes = cfg.widths[s]!;
    for (let b = 0; b < cfg.layers[s]!; b++) {
      const p = `layer${s + 1}.${b}`;
      const stride = b === 0 ? 2 : 1;
      let out = ops.bn(x, `${p}.bn1`);
      out = ops.conv(out, `${p}.conv1`, conv(planes, 3, 1, 1));
      out = ops.bn(out, `${p}.bn2`);
      out = ops.prelu(out, `${p}.prelu`);
      out = ops.conv(out, `${p}.conv2`, conv(planes, 3, stride, 1));
      out = ops.bn(out, `${p}.bn3`);
      let identity = x;
      if (stride !== 1 || inplanes !== planes) {
        identity = ops.conv(x, `${p}.downsample.0`, conv(planes, 1, stride, 0));
        identity = ops.bn(identity, `${p}.downsample.1`);
      }
      x = ops.add(out, identity);
      inplanes = planes;
    }
  }
  x = ops.bn(x, 'bn2');
  x = ops.flatten(x);
  x = ops.dropout(x, cfg.dropout);
  x = ops.linear(x, 'fc', cfg.embeddingSize, true);
  return ops.bn(x, 'features', true);
}

function mbfForward<T>(cfg: Extract<ResolvedConfig, { name: 'mbf' }>, ops: Ops<T>, input: T): T {
  const convBlock = (x: T, p: string, c: ConvSpec) => ops.prelu(ops.bn(ops.conv(x, `${p}.layers.0`, c), `${p}.layers.1`), `${p}.layers.2`);
  const linearBlock = (x: T, p: string, c: ConvSpec) => ops.bn(ops.conv(x, `${p}.layers.0`, c), `${p}.layers.1`);
  const depthWise = (x: T, p: string, out: number, groups: number, stride: number, residual: boolean) => {
    let y = convBlock(x, `${p}.layers.0`, conv(groups, 1, 1, 0));
    y = convBlock(y, `${p}.layers.1`, conv(groups, 3, stride, 1, groups));
    y = linearBlock(y, `${p}.layers.2`, conv(out, 1, 1, 0));
    return residual ? ops.add(x, y) : y;
  };
  const residual = (x: T, p: string, c: number, n: number, groups: number) => {
    for (let i = 0; i < n; i++) x = depthWise(x, `${p}.layers.${i}`, c, groups, 1, true);
    return x;
  };
  const s = cfg.scale;
  const [b0, b1, b2, b3] = cfg.blocks as [number, number, number, number];
  let x = convBlock(input, 'layers.0', conv(64 * s, 3, 2, 1));
  x = b0 === 1 ? convBlock(x, 'layers.1', conv(64 * s, 3, 1, 1, 64)) : residual(x, 'layers.1', 64 * s, b0, 128);
  x = depthWise(x, 'layers.2', 64 * s, 128, 2, false);
  x = residual(x, 'layers.3', 64 * s, b1, 128);
  x = depthWise(x, 'layers.4', 128 * s, 256, 2, false);
  x = residual(x, 'layers.5', 128 * s, b2, 256);
  x = depthWise(x, 'layers.6', 128 * s, 512, 2, false);
  x = residual(x, 'layers.7', 128 * s, b3, 256);
  x = convBlock(x, 'conv_sep', conv(512, 1, 1, 0));
  x = linearBlock(x, 'features.layers.0', conv(512, 7, 1, 0, 512));
  x = ops.flatten(x);
  x = ops.linear(x, 'features.layers.2', cfg.embeddingSize, false);
  return ops.bn(x, 'features.layers.3');
}

/** Runs the architecture of `cfg` through an interpreter. */
export function runArch<T>(cfg: ResolvedConfig, ops: Ops<T>, input: T): T {
  return cfg.name === 'iresnet' ? iresnetForward(cfg, ops, input) : mbfForward(cfg, ops, input);
}

/** Output side of a PyTorch convolution (floor division). */
export function convOutSize(inSize: number, c: ConvSpec): number {
  return Math.floor((inSize + 2 * c.pad - c.kernel) / c.stride) + 1;
}

/** One state-dict entry as the reference stores it (PyTorch layout). */
export interface ParamSpec {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int64';
  /** What the entry is, which decides its tfjs layout, initialisation and trainability. */
  kind: 'conv' | 'bn.weight' | 'bn.frozen_weight' | 'bn.bias' | 'bn.running_mean' | 'bn.running_var' | 'bn.num_batches_tracked' | 'prelu' | 'linear.weight' | 'linear.bias';
  /** For convolutions: the declaration; for linear layers: [in, out] and the preceding feature map [C, H, W]. */
  conv?: ConvSpec & { in: number };
  linear?: { in: number; out: number; map?: [number, number, number] };
}

/** A feature map or vector shape as the shape interpreter sees it (no batch axis). */
export type ShapeValue = { c: number; h: number; w: number } | { f: number; map?: [number, number, number] };

/** Everything the shape interpreter learns: the state dict's entries in definition order, MACs and output size. */
export interface ArchSummary {
  config: ResolvedConfig;
  params: ParamSpec[];
  /** Learnable parameters including the frozen `features.weight` (the reference's count); BN buffers excluded. */
  numParams: number;
  /** Multiply-accumulates of convolutions and linear layers for one image (ptflops' convention without BN/PReLU). */
  macs: number;
  /** Feature map entering the head (C, H, W). */
  headShape: [number, number, number];
  embeddingSize: number;
}

/**
 * Interprets the architecture by shape only (no tensors): state-dict entries, parameter count and MACs.
 * Throws `E_ARGUMENT` when the input is too small for the network.
 */
export function describeArch(cfg: ResolvedConfig): ArchSummary {
  const params: ParamSpec[] = [];
  let macs = 0;
  let head: [number, number, number] = [0, 0, 0];
  const chans = (x: ShapeValue) => ('c' in x ? x.c : x.f);
  const ops: Ops<ShapeValue> = {
    conv(x, name, c) {
      if (!('c' in x)) throw new Error(`conv ${name} on a vector`);
      const h = convOutSize(x.h, c);
      const w = convOutSize(x.w, c);
      if (h < 1 || w < 1) {
        throw new PfcError('E_ARGUMENT', `backbone config: input ${cfg.inputSize}x${cfg.inputSize} is too small: layer ${name} gets ${x.h}x${x.w}`, {
          details: { layer: name, inputSize: cfg.inputSize },
        });
      }
      params.push({ name: `${name}.weight`, shape: [c.out, x.c / c.groups, c.kernel, c.kernel], dtype: 'float32', kind: 'conv', conv: { ...c, in: x.c } });
      macs += h * w * c.out * (x.c / c.groups) * c.kernel * c.kernel;
      return { c: c.out, h, w };
    },
    bn(x, name, frozen) {
      const n = chans(x);
      params.push({ name: `${name}.weight`, shape: [n], dtype: 'float32', kind: frozen ? 'bn.frozen_weight' : 'bn.weight' });
      params.push({ name: `${name}.bias`, shape: [n], dtype: 'float32', kind: 'bn.bias' });
      params.push({ name: `${name}.running_mean`, shape: [n], dtype: 'float32', kind: 'bn.running_mean' });
      params.push({ name: `${name}.running_var`, shape: [n], dtype: 'float32', kind: 'bn.running_var' });
      params.push({ name: `${name}.num_batches_tracked`, shape: [], dtype: 'int64', kind: 'bn.num_batches_tracked' });
      return x;
    },
    prelu(x, name) {
      params.push({ name: `${name}.weight`, shape: [chans(x)], dtype: 'float32', kind: 'prelu' });
      return x;
    },
    add: (a) => a,
    flatten(x) {
      if (!('c' in x)) return x;
      head = [x.c, x.h, x.w];
      return { f: x.c * x.h * x.w, map: [x.c, x.h, x.w] };
    },
    dropout: (x) => x,
    linear(x, name, out, bias) {
      if ('c' in x) throw new Error(`linear ${name} on a feature map`);
      params.push({ name: `${name}.weight`, shape: [out, x.f], dtype: 'float32', kind: 'linear.weight', linear: { in: x.f, out, map: x.map } });
      if (bias) params.push({ name: `${name}.bias`, shape: [out], dtype: 'float32', kind: 'linear.bias', linear: { in: x.f, out } });
      macs += x.f * out;
      return { f: out };
    },
  };
  const out = runArch(cfg, ops, { c: 3, h: cfg.inputSize, w: cfg.inputSize });
  if (cfg.name === 'mbf' && (head[1] !== 1 || head[2] !== 1)) throw new Error('mbf head must reduce to 1x1');
  const numParams = params.filter((p) => !p.kind.startsWith('bn.running') && p.kind !== 'bn.num_batches_tracked').reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
  return { config: cfg, params, numParams, macs, headShape: head, embeddingSize: chans(out) };
}
