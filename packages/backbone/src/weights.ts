import { PfcError, readFileOrThrow, writeFileAtomic } from '@pfc/core';
import { resolveConfig } from './arch';
import type { BackboneConfig, ResolvedConfig } from './arch';
import { Backbone } from './model';
import type { StateDict } from './model';
import { exportOnnx, importOnnx } from './onnx/onnx';
import type { ExportOnnxOptions } from './onnx/onnx';
import { readSafetensors, writeSafetensors } from './safetensors';

/** Metadata key under which the network config is stored in our safetensors and ONNX files. */
export const NETWORK_METADATA_KEY = 'pfc.network';

/**
 * Infers the network config from a reference state dict's names and shapes (iResNet: `layerS.B.*` counts, stage
 * widths, FC size; MobileFaceNet: `layers.*`). Throws `E_WEIGHTS` when it is neither.
 */
export function inferConfigFromState(state: StateDict, source = '<state dict>'): ResolvedConfig {
  const shape = (k: string) => state.get(k)?.shape;
  if (state.has('conv1.weight') && state.has('fc.weight')) {
    const layers = [0, 0, 0, 0];
    for (const k of state.keys()) {
      const m = /^layer([1-4])\.(\d+)\.conv1\.weight$/.exec(k);
      if (m) layers[Number(m[1]) - 1] = Math.max(layers[Number(m[1]) - 1]!, Number(m[2]) + 1);
    }
    const widths = [1, 2, 3, 4].map((s) => shape(`layer${s}.0.conv1.weight`)?.[0] ?? 0);
    const fc = shape('fc.weight')!;
    const side = Math.round(Math.sqrt(fc[1]! / widths[3]!));
    try {
      return resolveConfig({ name: 'iresnet', layers, widths, stemWidth: shape('conv1.weight')![0], embeddingSize: fc[0], inputSize: side === 7 ? 112 : side * 16 });
    } catch (err) {
      throw new PfcError('E_WEIGHTS', `${source}: cannot infer the iResNet config: ${(err as Error).message}`, { cause: err });
    }
  }
  if (state.has('layers.0.layers.0.weight') && state.has('features.layers.2.weight')) {
    const scale = shape('layers.0.layers.0.weight')![0]! / 64;
    const count = (p: string) => {
      let n = 0;
      while (state.has(`${p}.layers.${n}.layers.0.layers.0.weight`)) n++;
      return n;
    };
    const b0 = state.has('layers.1.layers.0.weight') ? 1 : count('layers.1');
    return resolveConfig({ name: 'mbf', scale, blocks: [b0, count('layers.3'), count('layers.5'), count('layers.7')], embeddingSize: shape('features.layers.2.weight')![0] });
  }
  throw new PfcError('E_WEIGHTS', `${source}: not an iResNet or MobileFaceNet state dict (no 'conv1.weight'/'fc.weight' or 'layers.0.layers.0.weight')`, { details: { file: source } });
}

/** Saves a model as `.safetensors` in the reference's state-dict names/layouts, with its config as metadata. */
export function saveSafetensors(model: Backbone, path: string): void {
  writeSafetensors(path, model.getStateDict(), { format: 'pt', [NETWORK_METADATA_KEY]: JSON.stringify(model.config) });
}

/**
 * Loads a `.safetensors` state dict into a new model. The network comes from `network`, else from the file's
 * metadata, else from the tensor names and shapes. Missing, mis-shaped or unexpected tensors → `E_WEIGHTS`.
 */
export function loadSafetensors(path: string, network?: string | BackboneConfig): Backbone {
  const { tensors, metadata } = readSafetensors(path);
  const meta = metadata[NETWORK_METADATA_KEY];
  const cfg = network !== undefined ? resolveConfig(network) : meta ? resolveConfig(JSON.parse(meta) as BackboneConfig) : inferConfigFromState(tensors, path);
  const model = new Backbone(cfg);
  try {
    model.loadStateDict(tensors, { source: path });
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}

/** Writes a model as ONNX (see `exportOnnx`). */
export function saveOnnx(model: Backbone, path: string, options: ExportOnnxOptions = {}): void {
  writeFileAtomic(path, exportOnnx(model.config, model.getStateDict(), options));
}

/** Loads an iResNet/MobileFaceNet ONNX file (ours or the reference's export) into a new model (see `importOnnx`). */
export function loadOnnx(path: string): Backbone {
  const { config, state } = importOnnx(readFileOrThrow(path, 'E_ONNX'), path);
  const model = new Backbone(config);
  model.loadStateDict(state, { source: path });
  return model;
}

/** Loads weights by file extension: `.onnx` → {@link loadOnnx}, anything else → {@link loadSafetensors}. */
export function loadWeights(path: string, network?: string | BackboneConfig): Backbone {
  return path.toLowerCase().endsWith('.onnx') ? loadOnnx(path) : loadSafetensors(path, network);
}
