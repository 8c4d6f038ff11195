/**
 * @pfc/data — MXNet RecordIO in pure TypeScript, face image decoding and augmentation, datasets, a worker-pool
 * loader with a distributed sampler, and the `pfc-data` tools.
 */
export { RECORDIO_MAGIC, RECORDIO_MAX_LENGTH, RecordIOReader, RecordIOWriter, encodeRecord, parseIdx, formatIdx, idxPathFor, scanRecordOffsets } from './recordio';
export type { RawRecord, RecordIOReaderOptions } from './recordio';
export { IRHEADER_SIZE, packRecord, unpackRecord, classOf } from './irheader';
export type { IRHeader, PackHeader, UnpackedRecord } from './irheader';
export { decodeImage, decodeImageJs, encodeJpeg, encodeJpegJs, encodePng, sniffImageFormat, writeNormalized, loadSharp } from './image';
export type { RgbImage, DecoderName } from './image';
export { RecordFaceDataset, FolderFaceDataset, openFaceDataset, IMAGE_EXTENSIONS } from './dataset';
export type { FaceDataset, EncodedSample, RecordLayout, IdentityRange, RecordFaceDatasetOptions } from './dataset';
export { synthIdentityImage, synthIdentitySeed } from './synth';
export type { SynthOptions } from './synth';
export { DistributedSampler } from './sampler';
export type { DistributedSamplerOptions } from './sampler';
export { FaceLoader } from './loader';
export type { FaceLoaderOptions, LoaderPosition, Batch, SkippedSample } from './loader';
export { decodeBatch } from './decode';
export type { DecodeRequest, DecodeResult } from './decode';
export { FaceRecWriter, packFolder, writeSynthRec, unpackRec, inspectRec, verifyRec, rebuildIndex } from './tools';
export type { PackResult, PackOptions, SynthRecOptions, RecInspection, VerifyProblem, VerifyReport, VerifyOptions } from './tools';
