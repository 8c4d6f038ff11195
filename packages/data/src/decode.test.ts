import { decodeBatch } from './decode';
import type { DecodeRequest } from './decode';
import { decodeImage, decodeJpegStack, encodeJpeg, encodeJpegJs, encodePng, jpegFrame, loadSharp, writeNormalized } from './image';
import type { RgbImage } from './image';
import { synthIdentityImage } from './synth';

const tSharp = loadSharp() ? it : it.skip;

function request(images: Uint8Array[], flips: number[], size = 112): DecodeRequest {
  const offsets = new Int32Array(images.length + 1);
  images.forEach((b, i) => (offsets[i + 1] = offsets[i]! + b.length));
  const data = new Uint8Array(offsets[images.length]!);
  images.forEach((b, i) => data.set(b, offsets[i]));
  return { id: 7, data, offsets, where: images.map((_, i) => `img ${i}`), flips: Uint8Array.from(flips), height: size, width: size, decoder: 'sharp' };
}

/** The slot `i` that decodeBatch must produce: writeNormalized of the one-by-one decode. */
function expected(img: RgbImage, flip: boolean): Float32Array {
  const out = new Float32Array(img.height * img.width * 3);
  writeNormalized(out, 0, img, flip);
  return out;
}

function gray(img: RgbImage): RgbImage {
  const data = new Uint8Array(img.width * img.height * 3);
  for (let k = 0; k < data.length; k += 3) data[k] = data[k + 1] = data[k + 2] = img.data[k + 1]!;
  return { ...img, data };
}

describe('jpegFrame', () => {
  tSharp('reads size and components from the SOF marker; null for PNG, junk and headers cut short', async () => {
    const j = await encodeJpeg(synthIdentityImage(1, 0));
    expect(jpegFrame(j)).toEqual({ width: 112, height: 112, components: 3, icc: false });
    const g = await loadSharp()!(Buffer.from(synthIdentityImage(1, 0).data), { raw: { width: 112, height: 112, channels: 3 } }).resize(96, 80).toColourspace('b-w').jpeg().toBuffer();
    expect(jpegFrame(g)).toEqual({ width: 96, height: 80, components: 1, icc: false });
    const icc = await loadSharp()!(j).withIccProfile('srgb').jpeg().toBuffer();
    expect(jpegFrame(icc)).toMatchObject({ width: 112, height: 112, icc: true });
    expect(jpegFrame(encodePng(synthIdentityImage(1, 0)))).toBe(null);
    expect(jpegFrame(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00]))).toBe(null);
    expect(jpegFrame(j.subarray(0, 100))).toBe(null);
  });
});

describe('decodeBatch', () => {
  tSharp('decodes stacks of JPEGs in one sharp call to exactly the pixels of one-by-one decodes', async () => {
    // 70 images: two full stacks of 32 and one of 6
    const jpegs = await Promise.all(Array.from({ length: 70 }, (_, i) => encodeJpeg(synthIdentityImage(i % 9, i), 90)));
    const flips = jpegs.map((_, i) => (i % 3 === 0 ? 1 : 0));
    const stack = await decodeJpegStack(jpegs.slice(0, 3), 112, 112);
    expect(stack.length).toBe(3 * 112 * 112 * 3);
    const res = await decodeBatch(request(jpegs, flips));
    expect(res.errors).toEqual([]);
    expect([...res.ok].every((v) => v === 1)).toBe(true);
    const stride = 112 * 112 * 3;
    for (let i = 0; i < jpegs.length; i++) {
      const one = await decodeImage(jpegs[i]!);
      if (i < 3) expect(Buffer.from(stack.subarray(i * stride, (i + 1) * stride)).equals(Buffer.from(one.data))).toBe(true);
      // bit-identical float32: tolerance 0
      expect(Buffer.from(res.images.buffer, i * stride * 4, stride * 4).equals(Buffer.from(expected(one, flips[i] === 1).buffer))).toBe(true);
    }
  });

  tSharp('images a stack cannot take, and a stack that fails, are decoded one by one with an error each, in order', async () => {
    const good = await Promise.all(Array.from({ length: 5 }, (_, i) => encodeJpeg(synthIdentityImage(2, i))));
    const png = encodePng(synthIdentityImage(3, 0));
    // one component: decoded to RGB with the gray replicated, outside the stack
    const grayJpeg = await loadSharp()!(Buffer.from(gray(synthIdentityImage(4, 0)).data), { raw: { width: 112, height: 112, channels: 3 } }).toColourspace('b-w').jpeg().toBuffer();
    expect(jpegFrame(grayJpeg)!.components).toBe(1);
    const small = await loadSharp()!(good[0]!).resize(96, 96).jpeg().toBuffer();
    // a header that parses but a Huffman table libjpeg rejects: fails the whole stack, then only itself
    const bogus = Buffer.from(good[1]!);
    const dht = bogus.indexOf(Buffer.from([0xff, 0xc4]));
    bogus.fill(0xff, dht + 5, dht + 21);
    const truncated = good[2]!.subarray(0, good[2]!.length >> 1);
    const images = [good[0]!, bogus, png, good[3]!, small, truncated, grayJpeg, good[4]!];
    const flips = [0, 1, 1, 0, 0, 1, 1, 1];
    const res = await decodeBatch(request(images, flips));
    expect(res.errors.map((e) => [e.index, e.code])).toEqual([
      [1, 'E_IMAGE_DECODE'],
      [4, 'E_IMAGE_SIZE'],
      [5, 'E_IMAGE_DECODE'],
    ]);
    expect(res.errors[0]!.message).toContain('img 1');
    expect([...res.ok]).toEqual([1, 0, 1, 1, 0, 0, 1, 1]);
    const stride = 112 * 112 * 3;
    for (const i of [0, 2, 3, 6, 7]) {
      const want = expected(await decodeImage(images[i]!), flips[i] === 1);
      expect(Buffer.from(res.images.buffer, i * stride * 4, stride * 4).equals(Buffer.from(want.buffer))).toBe(true);
    }
    // failed slots stay zero
    expect(res.images.subarray(stride, 2 * stride).every((v) => v === 0)).toBe(true);
  });

  it('the js decoder never stacks and gives the same layout', async () => {
    const jpegs = [encodeJpegJs(synthIdentityImage(5, 0)), encodeJpegJs(synthIdentityImage(5, 1))];
    const res = await decodeBatch({ ...request(jpegs, [0, 1]), decoder: 'js' });
    expect(res.errors).toEqual([]);
    expect(res.images.length).toBe(2 * 112 * 112 * 3);
  });
});
