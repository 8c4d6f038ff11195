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
export { trainRank, backboneSpec, backboneFromConfig, embedImages, flipImages, verify } from './trainer';
export type { TrainRankOptions, TrainResult, StepTiming, VerificationSet } from './trainer';
export { ArrayTrainData, RecordTrainData, GlobalBatchSampler } from './data';
export type { TrainData } from './data';
export { CheckpointManager, checkpointName } from './checkpoint';
export type { CheckpointState } from './checkpoint';
export { SpeedLogger, AverageMeter } from './logging';
export type { SpeedLoggerOptions } from './logging';
export { launchTraining, launchBackendFromEnv } from './launch';
export type { LaunchBackend, LaunchOptions } from './launch';
export { trainThreadRank, verificationFilesOf } from './rank-entry';
export type { RankArgs } from './rank-entry';
export { loadVerificationSet } from './verification';
export { runRecipe, recipeMain, syntheticConfig, DEFAULT_SYNTHETIC } from './recipe';
export type { RecipeOptions, RecipeResult, SyntheticScale } from './recipe';
export { PartialFCHead } from './pfc-head';
export type { TrainHead } from './pfc-head';
