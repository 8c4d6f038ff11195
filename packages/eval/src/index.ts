/**
 * @pfc/eval — face verification evaluation usable with any face model: InsightFace `.bin` 10-fold verification
 * and IJB-B/IJB-C 1:1 TAR@FAR, numerically equal to the reference (`recognition/arcface_torch`).
 */
export { parsePickle, isPickledTuple, isPickledNdarray } from './pickle';
export type { PickleValue, PickledTuple, PickledNdarray } from './pickle';
export { parseVerificationBin, readVerificationBin, encodeVerificationBin, writeVerificationBin } from './bin';
export type { VerificationBin } from './bin';
export { decodeImage, resizeImage, flipHorizontal } from './image';
export type { RgbImage } from './image';
export { evaluateVerification, evaluateDistances, pairDistances, l2NormalizeRows, kFoldBounds, referenceThresholds } from './verification';
export type { VerificationResult, VerificationEmbeddingsResult, VerificationFold, EvaluateVerificationOptions, VerificationEmbeddingsOptions } from './verification';
export { rocCurve, auc, tarAtFar, formatTar, formatFixed, IJB_FARS } from './roc';
export type { RocCurve, RocOptions, TarAtFar } from './roc';
export { ARCFACE_TEMPLATE, ARCFACE_TEMPLATE_DECIMAL, estimateSimilarity, invertAffine, warpAffine, alignFace, landmarks68To5 } from './align';
export type { Affine, WarpOptions } from './align';
export { ARCFACE_NORMALIZATION, functionEmbedder, tfjsEmbedder, onnxEmbedder, loadOnnxRuntime, embedImages, toModelInput, flipBatch } from './embed';
export type { Embedder, EmbedderOptions, Normalization, OnnxEmbedderOptions, TfjsModelLike, EmbedImagesOptions, EmbeddedImages } from './embed';
export { verifyBin, decodeVerificationImages } from './verify-bin';
export type { VerifyBinOptions, VerifyBinResult } from './verify-bin';
export { readIjbProtocol, ijbMetaPaths, evaluateIjb, imageFeatures, templateFeatures, pairScores, ijbTable, formatIjbTable, ijbTableMarkdown, ijbModeName, rocSvg, writeIjbResults, writeIjbProtocol } from './ijb';
export type { IjbTarget, IjbProtocol, IjbTestMode, IjbTable, IjbResult, EvaluateIjbOptions, IjbImageSpec, IjbProtocolSpec, IjbProtocolColumns } from './ijb';
