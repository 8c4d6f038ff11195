import { basename, extname } from 'node:path';
import { decodeImage, readVerificationBin, resizeImage } from '@pfc/eval';
import type { VerificationSet } from './trainer';

/**
 * Loads an InsightFace verification `.bin` for the trainer: decodes every image, resizes it to `size` when it
 * differs (the reference's sets are 112×112) and normalises to [-1, 1] NHWC.
 */
export async function loadVerificationSet(path: string, size: number): Promise<VerificationSet> {
  const bin = readVerificationBin(path);
  const per = size * size * 3;
  const images = new Float32Array(bin.images.length * per);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= bin.images.length) return;
      let img = await decodeImage(bin.images[i]!, `${path} image ${i}`);
      if (img.width !== size || img.height !== size) img = await resizeImage(img, size, size);
      for (let j = 0; j < per; j++) images[i * per + j] = (img.data[j]! - 127.5) / 127.5;
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return { name: basename(path, extname(path)), images, issame: bin.issame };
}
