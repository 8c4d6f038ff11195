import { basename } from 'node:path';
import { readVerificationBin } from './bin';
import type { VerificationBin } from './bin';
import { decodeImage, resizeImage } from './image';
import { embedImages } from './embed';
import type { EmbedImagesOptions, Embedder } from './embed';
import { evaluateVerification } from './verification';
import type { EvaluateVerificationOptions, VerificationEmbeddingsResult } from './verification';

/**
 * Decodes a verification set's images to packed RGB HWC uint8 crops of `size`×`size` (`size`² × 3 bytes each).
 * Images of another width are resized to `size`×`size` (the reference resizes the short side to 112, which for the
 * square crops of every released set is the same).
 * @param concurrency decodes in flight (libvips decodes on its own threads)
 */
export async function decodeVerificationImages(bin: VerificationBin, size = 112, source = '<bin>', concurrency = 16): Promise<Uint8Array> {
  const per = size * size * 3;
  const out = new Uint8Array(bin.images.length * per);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= bin.images.length) return;
      let img = await decodeImage(bin.images[i]!, `${source}[${i}]`);
      if (img.width !== size || img.height !== size) img = await resizeImage(img, size, size);
      out.set(img.data, i * per);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, bin.images.length) }, worker));
  return out;
}

/** Options of {@link verifyBin}. */
export interface VerifyBinOptions extends EvaluateVerificationOptions, EmbedImagesOptions {}

/** Result of {@link verifyBin}: the 10-fold result plus the set's name and speed. */
export interface VerifyBinResult extends VerificationEmbeddingsResult {
  /** Set name (file name without `.bin`). */
  name: string;
  file: string;
  images: number;
  imagesPerSecond: number;
}

/**
 * Runs the reference verification protocol on a `.bin` file with any embedder: decode, embed original and
 * mirrored images, XNorm, flip fusion, 10-fold accuracy.
 * @param file path of the `.bin`
 */
export async function verifyBin(file: string, embedder: Embedder, options: VerifyBinOptions = {}): Promise<VerifyBinResult> {
  const bin = readVerificationBin(file);
  const crops = await decodeVerificationImages(bin, embedder.inputSize, file);
  const name = basename(file).replace(/\.bin$/, '');
  const emb = await embedImages(embedder, crops, bin.images.length, { progress: `${name}`, ...options });
  const res = evaluateVerification(emb.embeddings, emb.dim, bin.issame, {
    ...options,
    ...(emb.flipEmbeddings ? { flipEmbeddings: emb.flipEmbeddings } : {}),
  });
  return { ...res, name, file, images: bin.images.length, imagesPerSecond: emb.imagesPerSecond };
}
