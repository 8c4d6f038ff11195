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
