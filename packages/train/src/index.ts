/**
 * @pfc/train — data-parallel Partial FC training: config, schedule, optimizers, checkpoints, logging, the trainer.
 */
export { DEFAULT_CONFIG, resolveConfig, loadConfig, formatConfig } from './config';
export type { TrainConfig } from './config';
export { PolynomialLRWarmup, stepCounts } from './schedule';
export type { SchedulerState, StepCounts } from './schedule';
export { Sgd, AdamW, clipGradNorm } from './optim';
export type { HostOptimizer, OptimizerState } from './optim';
export { SummaryWriter, readEventFile, crc32c, maskedCrc32c, encodeTfRecord, decodeTfRecords, TENSORBOARD_PROTO } from './tensorboard';
export type { ScalarEvent } from './tensorboard';
