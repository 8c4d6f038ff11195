import { PfcError } from '@pfc/core';
import type { Communicator } from '@pfc/collective';
import { PartialFC } from '@pfc/partial-fc';
import type { TrainConfig } from './config';
import type { TrainHead } from './head';

/**
 * The trainer's head over `@pfc/partial-fc`'s {@link PartialFC} (host-memory bank, sampled margin softmax, its own
 * SGD, re-shardable checkpoints). Its SGD step happens inside `forwardBackward`, so it serves `gradient_acc` = 1
 * (every reference CNN config); for accumulation the trainer uses {@link BuiltinPartialFC}.
 */
export class PartialFCHead implements TrainHead {
  readonly pfc: PartialFC;

  constructor(comm: Communicator, cfg: TrainConfig, embeddingSize: number) {
    const [m1, m2, m3] = cfg.margin_list;
    this.pfc = new PartialFC({
      comm,
      numClasses: cfg.num_classes,
      embeddingSize,
      sampleRate: cfg.sample_rate,
      margin: { s: 64, m1, m2, m3, interclassFilteringThreshold: cfg.interclass_filtering_threshold },
      seed: cfg.seed,
      momentum: cfg.momentum,
      weightDecay: cfg.weight_decay,
      update: cfg.pfc_update,
    });
  }

  async forwardBackward(embeddings: Float32Array, labels: Int32Array, stepLr: number | null): Promise<{ loss: number; gradEmbeddings: Float32Array }> {
    if (stepLr === null) {
      throw new PfcError('E_CONFIG', "PartialFCHead: @pfc/partial-fc applies its update inside forwardBackward, so gradient_acc > 1 needs head 'builtin'", {
        details: { field: 'gradient_acc' },
      });
    }
    const r = await this.pfc.forwardBackward(embeddings, labels, { lr: stepLr });
    const g = r.gradEmbeddings;
    return { loss: r.loss, gradEmbeddings: g instanceof Float32Array ? g : Float32Array.from(g) };
  }

  save(dir: string): Promise<void> {
    return this.pfc.save(dir);
  }

  async load(dir: string): Promise<void> {
    await this.pfc.load(dir);
  }
}
