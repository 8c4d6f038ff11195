import { describeArch, resolveConfig } from './arch';
import type { BackboneConfig, ResolvedConfig } from './arch';
import { describeConfig } from './model';

/** Size of a network, computed from its description (no tensors are built). */
export interface BackboneSummary {
  network: string;
  config: ResolvedConfig;
  /** Learnable parameters including the frozen `features.weight` (the reference's count). */
  params: number;
  /** BatchNorm running statistics (not counted in `params`). */
  buffers: number;
  /** Multiply-accumulates of convolutions and linear layers for one image at the config's input size. */
  macs: number;
  /** Size of the parameters in fp32, MiB. */
  sizeMiB: number;
  inputShape: [number, number, number];
  embeddingSize: number;
}

/**
 * Parameters and MACs of a network (`r18`…`r200`, `mbf`, `mbf_large` or a config) at its input size (112×112 for
 * the reference networks): r50 43.59 M parameters and 6.31 GMACs, as the reference's `flops.py`.
 */
export function summary(network: string | BackboneConfig): BackboneSummary {
  const cfg = resolveConfig(network);
  const a = describeArch(cfg);
  const buffers = a.params.filter((p) => p.kind === 'bn.running_mean' || p.kind === 'bn.running_var').reduce((s, p) => s + p.shape[0]!, 0);
  return {
    network: describeConfig(cfg),
    config: cfg,
    params: a.numParams,
    buffers,
    macs: a.macs,
    sizeMiB: (a.numParams * 4) / 2 ** 20,
    inputShape: [3, cfg.inputSize, cfg.inputSize],
    embeddingSize: a.embeddingSize,
  };
}
