import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import { decodeImage, decodeImageJs, encodeJpeg, encodePng, loadSharp, sniffImageFormat, writeNormalized } from './image';
import type { RgbImage } from './image';
import { synthIdentityImage } from './synth';

const bbt = join(__dirname, '../../../../shared/realdata/faces/bbt');

function gradient(w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = (x * 7 + y * 3 + c * 50) & 255;
  return { width: w, height: h, data };
}

describe('decode', () => {
  it('PNG round trip is exact with both decoders', async () => {
    const img = gradient(9, 5);
    const png = encodePng(img);
    expect(sniffImageFormat(png)).toBe('png');
    for (const d of ['sharp', 'js'] as const) {
      const out = await decodeImage(png, 'x', d);
      expect([out.width, out.height]).toEqual([9, 5]);
      expect(Buffer.from(out.data).equals(Buffer.from(img.data))).toBe(true);
    }
  });

  it('grayscale and RGBA PNGs become RGB (gray replicated, alpha dropped)', async () => {
    const sharp = loadSharp()!;
    const gray = Uint8Array.from({ length: 12 }, (_, i) => i * 20);
    const grayPng = await sharp(gray, { raw: { width: 4, height: 3, channels: 1 } }).png().toBuffer();
    const rgba = Uint8Array.from({ length: 4 * 6 }, (_, i) => (i % 4 === 3 ? 10 : i * 9));
    const rgbaPng = await sharp(rgba, { raw: { width: 3, height: 2, channels: 4 } }).png().toBuffer();
    for (const d of ['sharp', 'js'] as const) {
      const g = await decodeImage(grayPng, 'g', d);
      expect(g.data.length).toBe(36);
      for (let i = 0; i < 12; i++) expect([g.data[3 * i], g.data[3 * i + 1], g.data[3 * i + 2]]).toEqual([gray[i], gray[i], gray[i]]);
      const c = await decodeImage(rgbaPng, 'c', d);
      for (let i = 0; i < 6; i++) expect([...c.data.subarray(3 * i, 3 * i + 3)]).toEqual([...rgba.subarray(4 * i, 4 * i + 3)]);
    }
  });

  (existsSync(bbt) ? it : it.skip)('decodes the real grayscale 150x150 PNGs to equal-channel RGB', async () => {
    const person = readdirSync(bbt).sort()[0]!;
    const file = join(bbt, person, readdirSync(join(bbt, person)).sort()[0]!);
    const bytes = readFileSync(file);
    const a = await decodeImage(bytes, file);
    const b = decodeImageJs(bytes, file);
    expect([a.width, a.height]).toEqual([150, 150]);
    expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
    let unequal = 0;
    for (let i = 0; i < a.data.length; i += 3) if (a.data[i + 1] !== a.data[i] || a.data[i + 2] !== a.data[i]) unequal++;
    expect(unequal).toBe(0);
  });

  it('JPEG encode/decode stays within JPEG error of the source', async () => {
    const img = synthIdentityImage(5, 0, { noise: 0 });
    const jpg = await encodeJpeg(img, 95);
    expect(sniffImageFormat(jpg)).toBe('jpeg');
    const out = await decodeImage(jpg);
    let sum = 0;
    for (let i = 0; i < img.data.length; i++) sum += Math.abs(out.data[i]! - img.data[i]!);
    expect(sum / img.data.length).toBeLessThan(4); // q95 on a smooth image: a level or two
  });

  it('undecodable bytes are E_IMAGE_DECODE naming the record', async () => {
    const bad = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4]);
    await expect(decodeImage(bad, 'a.rec key 3 at byte offset 96')).rejects.toThrow(
      expect.objectContaining({ code: 'E_IMAGE_DECODE', message: expect.stringContaining('a.rec key 3 at byte offset 96') }),
    );
    expect(() => decodeImageJs(bad, 'w')).toThrow(PfcError);
    await expect(decodeImage(Buffer.from('GIF89a...'), 'w')).rejects.toThrow(expect.objectContaining({ code: 'E_IMAGE_DECODE' }));
    expect(() => decodeImageJs(Buffer.alloc(0), 'w')).toThrow(expect.objectContaining({ code: 'E_IMAGE_DECODE' }));
  });
});

describe('writeNormalized', () => {
  it('maps 0, 127.5, 255 to -1, 0, 1 and mirrors along the width when flipping', () => {
    const img: RgbImage = { width: 3, height: 2, data: Uint8Array.from([0, 255, 51, 10, 20, 30, 255, 0, 204, 1, 2, 3, 4, 5, 6, 7, 8, 9]) };
    const out = new Float32Array(2 * 18).fill(NaN);
    writeNormalized(out, 0, img, false);
    writeNormalized(out, 1, img, true);
    const f = (v: number) => (v - 127.5) / 127.5;
    for (let i = 0; i < 18; i++) expect(Math.abs(out[i]! - f(img.data[i]!))).toBeLessThan(1e-6);
    // flipped: pixel x of row y comes from pixel (w-1-x)
    for (let y = 0; y < 2; y++)
      for (let x = 0; x < 3; x++)
        for (let c = 0; c < 3; c++) expect(Math.abs(out[18 + (y * 3 + x) * 3 + c]! - f(img.data[(y * 3 + (2 - x)) * 3 + c]!))).toBeLessThan(1e-6);
    expect(out[0]).toBe(-1);
    expect(out[1]).toBe(1);
  });
});
