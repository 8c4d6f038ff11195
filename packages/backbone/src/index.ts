/**
 * @pfc/backbone — the reference's face-recognition backbones (iResNet 18/34/50/100/200, MobileFaceNet) for tfjs,
 * with their PyTorch state-dict names, safetensors and ONNX in and out.
 */
export { resolveConfig, describeArch, NETWORK_NAMES } from './arch';
export type { BackboneConfig, IResNetConfig, MobileFaceNetConfig, ResolvedConfig, NetworkName, ArchSummary, ParamSpec, ConvSpec } from './arch';
export { Backbone, createBackbone, backwardFromEmbeddings, describeConfig, batchNormTrain, BN_EPS, BN_MOMENTUM } from './model';
export type { StateDict, StateTensor, NamedVariable, ApplyOptions, CreateBackboneOptions } from './model';
export { encodeSafetensors, decodeSafetensors, readSafetensors, writeSafetensors } from './safetensors';
export type { SafetensorsFile } from './safetensors';
export { exportOnnx, importOnnx } from './onnx/onnx';
export type { ExportOnnxOptions, ImportedOnnx } from './onnx/onnx';
export { saveSafetensors, loadSafetensors, saveOnnx, loadOnnx, loadWeights, inferConfigFromState, NETWORK_METADATA_KEY } from './weights';
export { summary } from './summary';
export type { BackboneSummary } from './summary';
