import { PfcError } from '@pfc/core';
import { decodeImage, writeNormalized } from './image';
import type { DecoderName } from './image';

/** One batch to decode: encoded images, where they came from, and the flip decision per image. */
export interface DecodeRequest {
  id: number;
  /** All encoded images back to back (one buffer, so it can be transferred to a worker). */
  data: Uint8Array;
  /** `n + 1` offsets into `data`: image i is `data[offsets[i]…offsets[i+1])`. */
  offsets: Int32Array;
  where: string[];
  flips: Uint8Array;
  height: number;
  width: number;
  decoder: DecoderName;
}

/** A decoded batch: `ok[i]` = 0 where image i failed (its slot is zeros and `errors` says why). */
export interface DecodeResult {
  id: number;
  /** float32 NHWC, `images.length × height × width × 3`. */
  images: Float32Array;
  ok: Uint8Array;
  errors: Array<{ index: number; code: string; message: string }>;
}

/** Decodes a batch in the calling thread: decode → check size → flip → normalize into NHWC float32. */
export async function decodeBatch(req: DecodeRequest): Promise<DecodeResult> {
  const n = req.offsets.length - 1;
  const out = new Float32Array(n * req.height * req.width * 3);
  const ok = new Uint8Array(n);
  const errors: DecodeResult['errors'] = [];
  const decoded = await Promise.allSettled(Array.from({ length: n }, (_, i) => decodeImage(req.data.subarray(req.offsets[i], req.offsets[i + 1]), req.where[i], req.decoder)));
  for (let i = 0; i < n; i++) {
    const d = decoded[i]!;
    if (d.status === 'rejected') {
      const e = d.reason as unknown;
      errors.push({ index: i, code: e instanceof PfcError ? e.code : 'E_IMAGE_DECODE', message: e instanceof Error ? e.message : String(e) });
      continue;
    }
    const img = d.value;
    if (img.width !== req.width || img.height !== req.height) {
      errors.push({
        index: i,
        code: 'E_IMAGE_SIZE',
        message: `decode: ${req.where[i]}: image is ${img.width}x${img.height}, expected ${req.width}x${req.height} (training images must be pre-aligned crops)`,
      });
      continue;
    }
    writeNormalized(out, i, img, req.flips[i] === 1);
    ok[i] = 1;
  }
  return { id: req.id, images: out, ok, errors };
}
