import { optionalRequire } from './require';
import { PfcError } from '@pfc/core';

/** An 8-bit RGB image, HWC, row-major. */
export interface RgbImage {
  width: number;
  height: number;
  /** width × height × 3 bytes. */
  data: Uint8Array;
}

type SharpFn = typeof import('sharp', { with: { 'resolution-mode': 'require' } });
let sharpFn: SharpFn | null = null;

function sharp(): SharpFn {
  if (sharpFn === null) {
    try {
      sharpFn = optionalRequire<SharpFn>('sharp');
    } catch (cause) {
      throw new PfcError('E_BACKEND_UNAVAILABLE', `image decoding needs the 'sharp' package, which failed to load: ${(cause as Error).message}`, { cause });
    }
  }
  return sharpFn;
}

/**
 * Decodes a JPEG/PNG (or any format libvips reads) to 8-bit RGB: grey images are replicated to three channels, alpha
 * is dropped (as OpenCV's `imread(IMREAD_COLOR)` and MXNet's `imdecode` do).
 * @param bytes the encoded image
 * @param source a label (file path or `file.bin[i]`) for error messages
 * @throws PfcError `E_IMAGE_DECODE`
 */
export async function decodeImage(bytes: Uint8Array, source = '<buffer>'): Promise<RgbImage> {
  try {
    const { data, info } = await sharp()(bytes, { failOn: 'error' }).raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, data: toRgb(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), info.width * info.height, info.channels) };
  } catch (cause) {
    if (PfcError.is(cause)) throw cause;
    throw new PfcError('E_IMAGE_DECODE', `${source}: cannot decode image: ${(cause as Error).message}`, { cause, details: { source } });
  }
}

function toRgb(src: Uint8Array, pixels: number, channels: number): Uint8Array {
  if (channels === 3) return src;
  const out = new Uint8Array(pixels * 3);
  for (let i = 0; i < pixels; i++) {
    if (channels <= 2) {
      const g = src[i * channels]!;
      out[3 * i] = g;
      out[3 * i + 1] = g;
      out[3 * i + 2] = g;
    } else {
      out[3 * i] = src[i * channels]!;
      out[3 * i + 1] = src[i * channels + 1]!;
      out[3 * i + 2] = src[i * channels + 2]!;
    }
  }
  return out;
}

/**
 * Resizes an RGB image with libvips' bilinear (`linear`) kernel; used only when a verification image is not already
 * the model's input size.
 */
export async function resizeImage(img: RgbImage, width: number, height: number): Promise<RgbImage> {
  const { data, info } = await sharp()(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: 'linear' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: toRgb(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), info.width * info.height, info.channels) };
}

/** Mirrors an RGB HWC image left-right (the flip test's second view). */
export function flipHorizontal(img: RgbImage): RgbImage {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = 3 * (y * w + x);
      const d = 3 * (y * w + (w - 1 - x));
      out[d] = data[s]!;
      out[d + 1] = data[s + 1]!;
      out[d + 2] = data[s + 2]!;
    }
  }
  return { width: w, height: h, data: out };
}
