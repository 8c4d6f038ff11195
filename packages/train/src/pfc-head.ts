import type { Communicator } from '@pfc/collective';
import { PartialFC } from '@pfc/partial-fc';
import type { TrainConfig } from './config';

/**
 * What the trainer needs from the classifier head of one rank: the Partial FC layer holds this rank's shard of the
 * class centers and its own optimizer state.
 */
export interface TrainHead {
  /**
   * Loss over the global batch and this rank's embedding gradient (collective: every rank calls it).
   * @param embeddings float32 [B, d] row-major, this rank's raw (un-normalised) embeddings
   * @param labels int32 [B] global class ids
   * @param stepLr when not null, the gradients accumulated so far (this call's included) are applied with this
   *   learning rate (SGD with the run's momentum and weight decay) and cleared: the optimizer step of an
   *   accumulation boundary. Null accumulates only (`gradient_acc` > 1).
   * @returns `loss` (identical on every rank) and `gradEmbeddings` float32 [B, d] = d loss / d embeddings
   *   (the true derivative; the reference's `.grad` is world size times this)
   */
  forwardBackward(embeddings: Float32Array, labels: Int32Array, stepLr: number | null): Promise<{ loss: number; gradEmbeddings: Float32Array }>;
  /** Writes this rank's shard into `dir` (every rank calls it with the same `dir`). */
  save(dir: string): Promise<void>;
  /** Loads this rank's shard from a directory written by `save` with any world size (re-sharding by class range). */
  load(dir: string): Promise<void>;
}

/**
 * The trainer's head over `@pfc/partial-fc`'s {@link PartialFC} (host-memory bank, sampled margin softmax, its own
 * SGD with `pfc_update` sparse or dense semantics, gradient accumulation, re-shardable checkpoints), configured from
 * the run's config: scale 64, `margin_list`, `sample_rate`, `interclass_filtering_threshold`, `momentum`,
 * `weight_decay`, `seed`.
 */
export class PartialFCHead implements TrainHead {
  readonly pfc: PartialFC;

  /**
   * @param comm the rank group (rank r holds the classes of `shardOf(num_classes, worldSize, r)`)
   * @param cfg the run's config
   * @param embeddingSize the backbone's embedding size d
   */
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
    // with lr, PartialFC adds this call's gradient to the accumulated ones and applies the window
    const r = await this.pfc.forwardBackward(embeddings, labels, stepLr === null ? { accumulate: true } : { lr: stepLr });
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
