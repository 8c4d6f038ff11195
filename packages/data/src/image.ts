import { createRequire } from 'node:module';
import { PfcError } from '@pfc/core';

// Optional and heavy decoders load on first use. `createRequire` works in the CJS build and in the ESM build
// (where tsup shims __filename), unlike a bare `require`.
const load = createRequire(__filename);

/** A decoded image: HWC uint8 RGB. */
export interface RgbImage {
  width: number;
  height: number;
  /** `height * width * 3` bytes, row-major, RGB interleaved. */
  data: Uint8Array;
}

/** Which decoder to use: libvips through `sharp`, or the pure-JS `jpeg-js`/`pngjs`. */
export type DecoderName = 'sharp' | 'js';

/** What an encoded buffer is, from its first bytes. */
export function sniffImageFormat(bytes: Uint8Array): 'jpeg' | 'png' | 'unknown' {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'png';
  return 'unknown';
}

type SharpFn = typeof import('sharp', { with: { 'resolution-mode': 'require' } });
let sharpModule: SharpFn | null | undefined;

/** `sharp` if its native binding loads on this machine, else null (then the pure-JS decoders are used). */
export function loadSharp(): SharpFn | null {
  if (sharpModule === undefined) {
    try {
      const s = load('sharp') as SharpFn;
      // one libvips thread per call: parallelism comes from the loader's workers, not from libvips
      s.concurrency(1);
      s.cache(false);
      sharpModule = s;
    } catch {
      sharpModule = null;
    }
  }
  return sharpModule;
}

function decodeError(where: string, cause: unknown, bytes: Uint8Array): PfcError {
  const msg = cause instanceof Error ? cause.message : String(cause);
  return new PfcError('E_IMAGE_DECODE', `decodeImage: ${where}: cannot decode ${bytes.length} bytes (${sniffImageFormat(bytes)}): ${msg}`, {
    cause,
    details: { where, bytes: bytes.length },
  });
}

/**
 * Decodes JPEG or PNG bytes to RGB (grayscale is replicated to 3 channels, alpha dropped, no EXIF rotation: as
 * `mx.image.imdecode` / PIL `convert('RGB')`) with the pure-JS decoders. Synchronous.
 * @param where names the record in error messages
 * @throws PfcError `E_IMAGE_DECODE`
 */
export function decodeImageJs(bytes: Uint8Array, where = '<image>'): RgbImage {
  const fmt = sniffImageFormat(bytes);
  try {
    if (fmt === 'jpeg') {
      const jpeg = load('jpeg-js') as typeof import('jpeg-js');
      const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 512 });
      return rgbaToRgb(img.width, img.height, img.data);
    }
    if (fmt === 'png') {
      const { PNG } = load('pngjs') as typeof import('pngjs');
      const img = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      return rgbaToRgb(img.width, img.height, img.data);
    }
  } catch (e) {
    throw decodeError(where, e, bytes);
  }
  throw decodeError(where, new Error('not a JPEG or PNG'), bytes);
}

function rgbaToRgb(width: number, height: number, rgba: Uint8Array): RgbImage {
  const n = width * height;
  const out = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    out[3 * i] = rgba[j]!;
    out[3 * i + 1] = rgba[j + 1]!;
    out[3 * i + 2] = rgba[j + 2]!;
  }
  return { width, height, data: out };
}

/**
 * Decodes JPEG or PNG bytes to RGB (grayscale replicated, alpha dropped, no EXIF rotation) with `sharp` (libvips,
 * libjpeg-turbo: the decoder PIL and OpenCV use), falling back to the pure-JS decoders when sharp cannot load or
 * `decoder` is `'js'`.
 * @throws PfcError `E_IMAGE_DECODE`
 */
export async function decodeImage(bytes: Uint8Array, where = '<image>', decoder: DecoderName = 'sharp'): Promise<RgbImage> {
  const sharp = decoder === 'sharp' ? loadSharp() : null;
  if (!sharp) return decodeImageJs(bytes, where);
  if (sniffImageFormat(bytes) === 'unknown') throw decodeError(where, new Error('not a JPEG or PNG'), bytes);
  try {
    const { data, info } = await sharp(bytes, { failOn: 'error' })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`expected 3 channels after conversion, got ${info.channels}`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    throw decodeError(where, e, bytes);
  }
}

/** A JPEG's frame header: size, colour components, and whether it embeds an ICC profile. */
export interface JpegFrame {
  width: number;
  height: number;
  components: number;
  icc: boolean;
}

/**
 * Reads the frame header of a Huffman-coded JPEG (SOF0 baseline, SOF1 extended, SOF2 progressive) by walking its
 * marker segments up to the scan; null for anything else (other codings, truncated or damaged headers), which the
 * caller then decodes on its own so that the decoder reports the problem.
 */
export function jpegFrame(bytes: Uint8Array): JpegFrame | null {
  if (sniffImageFormat(bytes) !== 'jpeg') return null;
  let frame: Omit<JpegFrame, 'icc'> | null = null;
  let icc = false;
  let pos = 2;
  while (pos + 3 < bytes.length) {
    if (bytes[pos] !== 0xff) return null;
    const m = bytes[pos + 1]!;
    if (m === 0xff) {
      pos++; // fill byte
      continue;
    }
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
      pos += 2; // markers without a length
      continue;
    }
    const len = (bytes[pos + 2]! << 8) | bytes[pos + 3]!;
    if (len < 2 || pos + 2 + len > bytes.length) return null;
    if (m === 0xda) return frame && { ...frame, icc };
    if (m === 0xd9) return null;
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      if (m > 0xc2 || len < 8 || frame) return null;
      frame = { height: (bytes[pos + 5]! << 8) | bytes[pos + 6]!, width: (bytes[pos + 7]! << 8) | bytes[pos + 8]!, components: bytes[pos + 9]! };
    } else if (m === 0xe2 && len >= 14 && Buffer.from(bytes.buffer, bytes.byteOffset + pos + 4, 12).toString('latin1') === 'ICC_PROFILE\0') {
      icc = true;
    }
    pos += 2 + len;
  }
  return null;
}

/**
 * Decodes k ≥ 2 JPEGs of one size, 3 components and no ICC profile (check with {@link jpegFrame}) in one sharp call,
 * stacked vertically: the result is `k × height × width × 3` uint8, image j at `j × height × width × 3`, the same
 * pixels as {@link decodeImage} of each. One call amortises sharp's fixed cost per pipeline (reading the options
 * object, two thread hand-offs), which is larger than the decode itself at 112×112.
 * @throws when sharp cannot load or any image fails; the caller decodes the images one by one to find which
 */
export async function decodeJpegStack(images: Uint8Array[], height: number, width: number): Promise<Uint8Array> {
  const sharp = loadSharp();
  if (!sharp) throw new Error('decodeJpegStack: sharp is not available');
  const { data, info } = await sharp(
    images.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)),
    { failOn: 'error', join: { across: 1 } },
  )
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height * images.length || info.channels !== 3) {
    throw new Error(`decodeJpegStack: got ${info.width}x${info.height}x${info.channels}, expected ${width}x${height * images.length}x3`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Encodes RGB HWC uint8 as JPEG (4:2:0, baseline) — sharp when available, else jpeg-js.
 * @param quality 1..100 (im2rec default 95; InsightFace packs used 95–100)
 */
export async function encodeJpeg(img: RgbImage, quality = 95): Promise<Buffer> {
  const sharp = loadSharp();
  if (sharp) {
    return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).jpeg({ quality, mozjpeg: false }).toBuffer();
  }
  return encodeJpegJs(img, quality);
}

/** Encodes RGB HWC uint8 as JPEG with the pure-JS encoder (synchronous; usable inside tight loops and workers). */
export function encodeJpegJs(img: RgbImage, quality = 95): Buffer {
  const jpeg = load('jpeg-js') as typeof import('jpeg-js');
  const n = img.width * img.height;
  const rgba = Buffer.alloc(n * 4, 255);
  for (let i = 0; i < n; i++) {
    rgba[4 * i] = img.data[3 * i]!;
    rgba[4 * i + 1] = img.data[3 * i + 1]!;
    rgba[4 * i + 2] = img.data[3 * i + 2]!;
  }
  return Buffer.from(jpeg.encode({ data: rgba, width: img.width, height: img.height }, quality).data);
}

/** Encodes RGB HWC uint8 as PNG (pngjs). */
export function encodePng(img: RgbImage): Buffer {
  const { PNG } = load('pngjs') as typeof import('pngjs');
  const png = new PNG({ width: img.width, height: img.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
  Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength).copy(png.data);
  return PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
}

/** `(v - 127.5) / 127.5` for every uint8 v, as float32: a table lookup instead of a multiply-add per channel. */
const NORMALIZED = Float32Array.from({ length: 256 }, (_, v) => v * (1 / 127.5) - 1);

/**
 * Writes one image into a NHWC float32 batch at slot `index`: optional horizontal flip, then
 * `(pixel - 127.5) / 127.5` ∈ [-1, 1] (= torchvision ToTensor + Normalize(0.5, 0.5), DALI mean/std 127.5).
 * @param out float32 `[N, H, W, 3]`
 */
export function writeNormalized(out: Float32Array, index: number, img: RgbImage, flip: boolean): void {
  const { width: w, height: h, data } = img;
  const t = NORMALIZED;
  const n = h * w * 3;
  const base = index * n;
  if (!flip) {
    for (let k = 0; k < n; k++) out[base + k] = t[data[k]!]!;
    return;
  }
  const rowLen = w * 3;
  for (let row = 0; row < n; row += rowLen) {
    // destination pixel x of this row takes source pixel w - 1 - x
    for (let dst = base + row, src = row + rowLen - 3, end = dst + rowLen; dst < end; dst += 3, src -= 3) {
      out[dst] = t[data[src]!]!;
      out[dst + 1] = t[data[src + 1]!]!;
      out[dst + 2] = t[data[src + 2]!]!;
    }
  }
}
