import type { ParamSpec } from './arch';

/**
 * Conversions between the reference's PyTorch layouts (OIHW convolutions, [out, in] linear weights flattened in
 * NCHW order) and the tfjs layouts this package computes with (NHWC activations).
 *
 * Convolutions of every group count share one tfjs layout, [k, k, in, out/groups]: for groups = 1 it is HWIO, for
 * depthwise convolutions it is tfjs' [k, k, C, 1] depthwise filter, and for the grouped case a depthwise filter
 * with channel multiplier out/groups whose products are summed per group (see `model.ts`).
 *   tf[kh, kw, g·inG + i, j] = pt[g·outG + j, i, kh, kw]
 * Linear weights are stored [in, out] so the forward is `x · W` without transpose flags; after a feature map the
 * input index is NHWC's (h·W + w)·C + c instead of PyTorch's c·H·W + h·W + w.
 */

/** The tfjs shape of a state-dict entry. */
export function tfShape(p: ParamSpec): number[] {
  if (p.kind === 'conv') {
    const c = p.conv!;
    return [c.kernel, c.kernel, c.in, c.out / c.groups];
  }
  if (p.kind === 'linear.weight') return [p.linear!.in, p.linear!.out];
  return p.shape;
}

/** PyTorch-layout data of one entry → tfjs layout (a new array). */
export function toTfLayout(p: ParamSpec, src: Float32Array): Float32Array {
  if (p.kind === 'conv') {
    const { kernel: k, in: cin, out, groups } = p.conv!;
    const inG = cin / groups;
    const outG = out / groups;
    const dst = new Float32Array(src.length);
    for (let o = 0; o < out; o++) {
      const g = Math.floor(o / outG);
      const j = o - g * outG;
      for (let i = 0; i < inG; i++) {
        const ci = g * inG + i;
        for (let kh = 0; kh < k; kh++) {
          for (let kw = 0; kw < k; kw++) dst[((kh * k + kw) * cin + ci) * outG + j] = src[((o * inG + i) * k + kh) * k + kw]!;
        }
      }
    }
    return dst;
  }
  if (p.kind === 'linear.weight') {
    const { in: nin, out } = p.linear!;
    const perm = linearInputPermutation(p);
    const dst = new Float32Array(src.length);
    for (let o = 0; o < out; o++) {
      const row = o * nin;
      for (let t = 0; t < nin; t++) dst[t * out + o] = src[row + perm[t]!]!;
    }
    return dst;
  }
  return Float32Array.from(src);
}

/** tfjs-layout data of one entry → PyTorch layout (a new array). */
export function toTorchLayout(p: ParamSpec, src: Float32Array): Float32Array {
  if (p.kind === 'conv') {
    const { kernel: k, in: cin, out, groups } = p.conv!;
    const inG = cin / groups;
    const outG = out / groups;
    const dst = new Float32Array(src.length);
    for (let o = 0; o < out; o++) {
      const g = Math.floor(o / outG);
      const j = o - g * outG;
      for (let i = 0; i < inG; i++) {
        const ci = g * inG + i;
        for (let kh = 0; kh < k; kh++) {
          for (let kw = 0; kw < k; kw++) dst[((o * inG + i) * k + kh) * k + kw] = src[((kh * k + kw) * cin + ci) * outG + j]!;
        }
      }
    }
    return dst;
  }
  if (p.kind === 'linear.weight') {
    const { in: nin, out } = p.linear!;
    const perm = linearInputPermutation(p);
    const dst = new Float32Array(src.length);
    for (let o = 0; o < out; o++) {
      const row = o * nin;
      for (let t = 0; t < nin; t++) dst[row + perm[t]!] = src[t * out + o]!;
    }
    return dst;
  }
  return Float32Array.from(src);
}

/** perm[tfIndex] = torchIndex for a linear layer's input features (identity unless it follows a feature map). */
function linearInputPermutation(p: ParamSpec): Int32Array {
  const nin = p.linear!.in;
  const perm = new Int32Array(nin);
  const map = p.linear!.map;
  if (!map) {
    for (let t = 0; t < nin; t++) perm[t] = t;
    return perm;
  }
  const [C, H, W] = map;
  for (let h = 0; h < H; h++) {
    for (let w = 0; w < W; w++) {
      for (let c = 0; c < C; c++) perm[(h * W + w) * C + c] = c * H * W + h * W + w;
    }
  }
  return perm;
}
