/**
 * @pfc/partial-fc — Partial FC: the sharded, sampled margin-softmax classifier with a host-memory class-center bank.
 */
export { PartialFC } from './partial-fc';
export type { PartialFCOptions, StepOptions, StepResult } from './partial-fc';
export { ClassBank } from './bank';
export type { BankStorage, SgdOptions } from './bank';
export { resolveMargin, ARCFACE, COSFACE } from './margin';
export type { MarginOptions, ResolvedMargin } from './margin';
export { shardOf, numSampleOf } from './sharding';
export type { Shard } from './sharding';
export { sampleCenters, forcedCenters, localizeLabels, remapLabels, topKSorted } from './sampling';
export type { Sampled, KeySource } from './sampling';
export { checkVectors, defaultTolerances, vectorRank } from './vectors';
export type { CheckVectorsOptions, CheckVectorsReport, WorldSizeCheck, Tolerances, VectorRankArgs, VectorRankResult } from './vectors';
export { saveBank, loadBank } from './checkpoint';
export type { BankManifest } from './checkpoint';
