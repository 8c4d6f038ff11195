import { fromFloat16Bits, toFloat16Bits, float16ToFloat32, float32ToFloat16 } from './float16';

describe('float16', () => {
  it('encodes known values exactly (IEEE 754 binary16)', () => {
    const known: [number, number][] = [
      [0, 0x0000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [2 ** -24, 0x0001], [2 ** -14, 0x0400],
      [Infinity, 0x7c00], [-Infinity, 0xfc00], [1e6, 0x7c00], [0.333251953125, 0x3555],
    ];
    for (const [v, bits] of known) {
      expect(toFloat16Bits(v)).toBe(bits);
      if (Math.abs(v) <= 65504) expect(fromFloat16Bits(bits)).toBe(v);
    }
    expect(Number.isNaN(fromFloat16Bits(toFloat16Bits(NaN)))).toBe(true);
  });

  it('rounds to nearest even, and every binary16 value round-trips', () => {
    expect(toFloat16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(toFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    for (let h = 0; h < 65536; h++) {
      const v = fromFloat16Bits(h);
      if (!Number.isNaN(v)) expect(toFloat16Bits(v)).toBe(h === 0x8000 ? 0x8000 : h);
    }
  });

  it('relative error of float32 → float16 → float32 is at most 2^-11 in the normal range', () => {
    const xs = Float32Array.from({ length: 1000 }, (_, i) => (i - 500) * 0.0731 + 1e-3);
    const back = float16ToFloat32(float32ToFloat16(xs));
    for (let i = 0; i < xs.length; i++) {
      if (Math.abs(xs[i]!) > 6.1e-5) expect(Math.abs(back[i]! - xs[i]!) / Math.abs(xs[i]!)).toBeLessThanOrEqual(2 ** -11);
    }
  });
});
