import { basename, extname } from 'node:path';
import { decodeVerificationImages, readVerificationBin } from '@pfc/eval';
import type { VerificationSet } from './trainer';

/**
 * Loads an InsightFace verification `.bin` for the trainer: decodes every image (`@pfc/eval`'s
 * `decodeVerificationImages`: resized to `size` when it differs; the reference's sets are 112×112) and normalises
 * to [-1, 1] NHWC float32.
 */
export async function loadVerificationSet(path: string, size: number): Promise<VerificationSet> {
  const bin = readVerificationBin(path);
  const pixels = await decodeVerificationImages(bin, size, path);
  const images = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) images[i] = (pixels[i]! - 127.5) / 127.5;
  return { name: basename(path, extname(path)), images, issame: bin.issame };
}
