import { ArrayTrainData, GlobalBatchSampler } from './data';

describe('GlobalBatchSampler', () => {
  it('gives the same global batches for any world size, disjoint rank slices, per-epoch permutations', () => {
    const s = new GlobalBatchSampler(40, 7, true);
    const w1 = s.batch(0, 2, 0, 1, 8);
    const r0 = s.batch(0, 2, 0, 2, 4);
    const r1 = s.batch(0, 2, 1, 2, 4);
    expect([...r0.indices, ...r1.indices]).toEqual([...w1.indices]);
    expect([...r0.flip, ...r1.flip]).toEqual([...w1.flip]);
    const all = new Set<number>();
    for (let k = 0; k < 5; k++) for (const i of s.batch(0, k, 0, 1, 8).indices) all.add(i);
    expect(all.size).toBe(40);
    expect(Array.from(s.batch(1, 0, 0, 1, 8).indices)).not.toEqual(Array.from(s.batch(0, 0, 0, 1, 8).indices));
    expect(() => s.batch(0, 5, 0, 1, 8)).toThrow(/runs past the 40 samples/);
  });
});

describe('ArrayTrainData', () => {
  it('returns the indexed images, mirrored where asked, and their labels', async () => {
    // two 2×2 images: pixel value = 10·image + x (all channels)
    const img = new Float32Array(2 * 2 * 2 * 3);
    for (let k = 0; k < 2; k++) for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) for (let c = 0; c < 3; c++) img[((k * 2 + y) * 2 + x) * 3 + c] = 10 * k + x;
    const d = new ArrayTrainData(img, Int32Array.of(5, 6), 2, 7);
    const b = await d.load(Int32Array.of(1, 0), Uint8Array.of(1, 0));
    expect(Array.from(b.labels)).toEqual([6, 5]);
    expect(b.images[0]).toBe(11); // image 1 mirrored: x = 0 shows x = 1
    expect(b.images[3]).toBe(10);
    expect(b.images[12]).toBe(0); // image 0 as is
    expect(() => new ArrayTrainData(new Float32Array(5), Int32Array.of(1), 2, 2)).toThrow(/images/);
  });
});
