import { PfcError } from '@pfc/core';
import { decodeImage, decodeJpegStack, jpegFrame, loadSharp, writeNormalized } from './image';
import type { DecoderName, RgbImage } from './image';

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
  /** In image order. */
  errors: Array<{ index: number; code: string; message: string }>;
}

/**
 * JPEGs per sharp call. sharp's fixed cost per call (options marshalling, thread hand-offs) is about half the cost
 * of decoding a 112×112 JPEG; 32 per call takes most of it away and leaves a batch of 128 as 4 calls, so
 * normalizing one stack overlaps decoding the next.
 */
const STACK = 32;

/**
 * Decodes a batch in the calling thread: decode → check size → flip → normalize into NHWC float32. With sharp, the
 * JPEGs whose header says they have the expected size, 3 components and no ICC profile are decoded in stacks of up
 * to {@link STACK} per call (the same pixels as one by one); everything else, and every image of a stack that fails,
 * is decoded on its own, so each error names its own image.
 */
export async function decodeBatch(req: DecodeRequest): Promise<DecodeResult> {
  const n = req.offsets.length - 1;
  const { height, width } = req;
  const out = new Float32Array(n * height * width * 3);
  const ok = new Uint8Array(n);
  const errors: DecodeResult['errors'] = [];
  const bytes = (i: number) => req.data.subarray(req.offsets[i], req.offsets[i + 1]);
  const place = (i: number, img: RgbImage) => {
    if (img.width !== width || img.height !== height) {
      errors.push({
        index: i,
        code: 'E_IMAGE_SIZE',
        message: `decode: ${req.where[i]}: image is ${img.width}x${img.height}, expected ${width}x${height} (training images must be pre-aligned crops)`,
      });
      return;
    }
    writeNormalized(out, i, img, req.flips[i] === 1);
    ok[i] = 1;
  };
  const one = (i: number): Promise<void> =>
    decodeImage(bytes(i), req.where[i], req.decoder).then(
      (img) => place(i, img),
      (e: unknown) => {
        errors.push({ index: i, code: e instanceof PfcError ? e.code : 'E_IMAGE_DECODE', message: e instanceof Error ? e.message : String(e) });
      },
    );
  const stacks: number[][] = [];
  const singles: number[] = [];
  if (req.decoder === 'sharp' && loadSharp()) {
    let cur: number[] = [];
    for (let i = 0; i < n; i++) {
      const f = jpegFrame(bytes(i));
      if (f && f.width === width && f.height === height && f.components === 3 && !f.icc) {
        cur.push(i);
        if (cur.length === STACK) {
          stacks.push(cur);
          cur = [];
        }
      } else singles.push(i);
    }
    if (cur.length > 1) stacks.push(cur);
    else singles.push(...cur);
  } else {
    for (let i = 0; i < n; i++) singles.push(i);
  }
  const stride = height * width * 3;
  const decodeStack = (s: number[]): Promise<Uint8Array | null> =>
    decodeJpegStack(s.map(bytes), height, width).catch(() => null);
  const stacked = async (): Promise<void> => {
    // one sharp call in flight per batch, the next stack decoding while this thread normalizes the last one:
    // more calls at once only add thread hand-offs and lock contention on a machine with few cores
    let next = stacks.length > 0 ? decodeStack(stacks[0]!) : null;
    for (let k = 0; k < stacks.length; k++) {
      const px = await next!;
      next = k + 1 < stacks.length ? decodeStack(stacks[k + 1]!) : null;
      const s = stacks[k]!;
      if (px) s.forEach((i, j) => place(i, { width, height, data: px.subarray(j * stride, (j + 1) * stride) }));
      else await Promise.all(s.map(one));
    }
  };
  await Promise.all([stacked(), ...singles.map(one)]);
  errors.sort((a, b) => a.index - b.index);
  return { id: req.id, images: out, ok, errors };
}
