import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import { FolderFaceDataset, RecordFaceDataset } from './dataset';
import type { FaceDataset } from './dataset';
import { FaceLoader } from './loader';
import type { Batch } from './loader';
import { DistributedSampler } from './sampler';
import { synthIdentityImage, synthIdentitySeed } from './synth';
import { FaceRecWriter, verifyRec, writeSynthRec } from './tools';
import { decodeImage, encodeJpegJs, encodePng } from './image';

let dir: string;
let rec: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pfc-loader-'));
  rec = (await writeSynthRec(join(dir, 'train'), { identities: 6, perIdentity: 5, seed: 3 })).rec;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('DistributedSampler', () => {
  it('gives ranks disjoint slices covering every index, padded as PyTorch', () => {
    const n = 10;
    const W = 4;
    const slices = Array.from({ length: W }, (_, r) => new DistributedSampler(n, { numReplicas: W, rank: r, seed: 5 }).indices(2));
    expect(slices.every((s) => s.length === 3)).toBe(true); // ceil(10/4)
    const all = slices.flatMap((s) => [...s]);
    expect(new Set(all).size).toBe(n);
    // total 12 = 10 + 2 padded from the head of the permutation: positions 10, 11 repeat positions 0, 1
    const perm = new DistributedSampler(n, { numReplicas: 1, seed: 5 }).indices(2);
    expect([slices[2]![2], slices[3]![2]]).toEqual([perm[0], perm[1]]);
    expect([...slices[1]!]).toEqual([perm[1], perm[5], perm[9]]);
  });

  it('dropLast truncates to equal slices without padding; shuffle is per-epoch and seeded', () => {
    const s = new DistributedSampler(10, { numReplicas: 4, rank: 0, dropLast: true });
    expect(s.numSamples).toBe(2);
    const a = new DistributedSampler(100, { seed: 1 });
    expect([...a.indices(0)]).toEqual([...new DistributedSampler(100, { seed: 1 }).indices(0)]);
    expect([...a.indices(0)]).not.toEqual([...a.indices(1)]);
    expect([...new DistributedSampler(5, { shuffle: false }).indices(3)]).toEqual([0, 1, 2, 3, 4]);
    // padding wraps more than once when the set is smaller than the world
    expect([...new DistributedSampler(2, { numReplicas: 5, rank: 4, shuffle: false }).indices(0)]).toEqual([0]);
    expect(() => new DistributedSampler(10, { numReplicas: 2, rank: 2 })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });
});

describe('synthetic identities', () => {
  it('are deterministic, and samples of one identity are closer than other identities (nearest centroid ≫ chance)', () => {
    const a = synthIdentityImage(synthIdentitySeed(0, 4), 2);
    expect(Buffer.from(a.data).equals(Buffer.from(synthIdentityImage(synthIdentitySeed(0, 4), 2).data))).toBe(true);
    expect(synthIdentitySeed(0, 1)).not.toBe(synthIdentitySeed(1, 0));
    const C = 20;
    const train = 4;
    const test = 4;
    const D = 112 * 112 * 3;
    const centroids = Array.from({ length: C }, (_, c) => {
      const m = new Float64Array(D);
      for (let j = 0; j < train; j++) synthIdentityImage(synthIdentitySeed(0, c), j).data.forEach((v, k) => (m[k]! += v / train));
      return m;
    });
    let correct = 0;
    let within = 0;
    let between = 0;
    for (let c = 0; c < C; c++) {
      for (let j = train; j < train + test; j++) {
        const x = synthIdentityImage(synthIdentitySeed(0, c), j).data;
        const d = centroids.map((m) => {
          let s = 0;
          for (let k = 0; k < D; k += 3) s += (x[k]! - m[k]!) ** 2;
          return s;
        });
        const best = d.indexOf(Math.min(...d));
        if (best === c) correct++;
        within += d[c]!;
        between += (d.reduce((p, q) => p + q, 0) - d[c]!) / (C - 1);
      }
    }
    const acc = correct / (C * test);
    expect(acc).toBeGreaterThanOrEqual(0.9); // chance is 1/20
    expect(between / within).toBeGreaterThan(3);
  });

  it('writeSynthRec writes a header-layout rec with the in-memory images (JPEG-close)', async () => {
    const ds = new RecordFaceDataset(rec);
    expect(ds.layout).toBe('insightface-header');
    expect(ds.numClasses).toBe(6);
    expect(ds.length).toBe(30);
    const s = ds.read(7); // identity 1, sample 2
    expect(s.label).toBe(1);
    const img = await decodeImage(s.image, s.where);
    const ref = synthIdentityImage(synthIdentitySeed(3, 1), 2);
    let sum = 0;
    for (let k = 0; k < ref.data.length; k++) sum += Math.abs(img.data[k]! - ref.data[k]!);
    expect(sum / ref.data.length).toBeLessThan(6); // JPEG q95 of a noisy image: a few levels
    ds.close();
  });
});

async function collect(it: AsyncIterable<Batch>): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of it) out.push(b);
  return out;
}

describe('FaceLoader', () => {
  it('produces NHWC float32 batches in [-1, 1] with flips, identical with 0 and 2 workers', async () => {
    const ds = new RecordFaceDataset(rec);
    const opts = { batchSize: 8, seed: 11 } as const;
    const l0 = new FaceLoader(ds, { ...opts, workers: 0 });
    const l2 = new FaceLoader(ds, { ...opts, workers: 2, prefetch: 3 });
    expect(l0.stepsPerEpoch).toBe(3); // 30 samples, drop_last
    const a = await collect(l0.epoch(0));
    const b = await collect(l2.epoch(0));
    await l2.close();
    expect(a.length).toBe(3);
    for (let i = 0; i < 3; i++) {
      expect(b[i]!.keys).toEqual(a[i]!.keys);
      expect([...b[i]!.labels]).toEqual([...a[i]!.labels]);
      expect(Buffer.from(b[i]!.images.buffer).equals(Buffer.from(a[i]!.images.buffer))).toBe(true);
      expect(a[i]!.images.length).toBe(8 * 112 * 112 * 3);
    }
    // the first image equals the normalised (maybe flipped) decode of its record
    const s = ds.read(ds.imageKeys.indexOf(a[0]!.keys[0] as number));
    const img = await decodeImage(s.image, s.where);
    const x = a[0]!.images;
    const plain = Math.abs(x[0]! - (img.data[0]! - 127.5) / 127.5);
    const flipped = Math.abs(x[0]! - (img.data[111 * 3]! - 127.5) / 127.5);
    expect(Math.min(plain, flipped)).toBeLessThan(1e-6);
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of x) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    expect(lo).toBeGreaterThanOrEqual(-1);
    expect(hi).toBeLessThanOrEqual(1);
    // about half of the images are flipped: compare every first pixel with its record
    let flips = 0;
    let total = 0;
    for (const batch of a) {
      for (let i = 0; i < batch.size; i++) {
        const r = ds.read(ds.imageKeys.indexOf(batch.keys[i] as number));
        const d = await decodeImage(r.image, r.where);
        const off = i * 112 * 112 * 3;
        const isPlain = Math.abs(batch.images[off]! - (d.data[0]! - 127.5) / 127.5) < 1e-6 && Math.abs(batch.images[off + 3]! - (d.data[3]! - 127.5) / 127.5) < 1e-6;
        if (!isPlain) flips++;
        total++;
      }
    }
    expect(flips).toBeGreaterThan(2);
    expect(flips).toBeLessThan(total - 2);
    ds.close();
  });

  it('resumes exactly from a saved position, across epochs; shuffles differ per epoch', async () => {
    const ds = new RecordFaceDataset(rec);
    const l = new FaceLoader(ds, { batchSize: 7, seed: 2, workers: 0 });
    const full = await collect(l.iterate({ epoch: 0, step: 0 }, { epoch: 2, step: 2 }));
    expect(full.map((b) => [b.epoch, b.step])).toEqual([
      [0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 2], [1, 3], [2, 0], [2, 1],
    ]);
    const resumed = await collect(l.iterate(full[5]!.next, { epoch: 2, step: 2 }));
    expect(resumed.length).toBe(4);
    resumed.forEach((b, i) => {
      const f = full[6 + i]!;
      expect(b.keys).toEqual(f.keys);
      expect(Buffer.from(b.images.buffer).equals(Buffer.from(f.images.buffer))).toBe(true);
    });
    expect(full[0]!.keys).not.toEqual(full[4]!.keys);
    ds.close();
  });

  it('splits an epoch across ranks: disjoint samples, same step count', async () => {
    const ds = new RecordFaceDataset(rec);
    const ranks = [0, 1, 2].map((r) => new FaceLoader(ds, { batchSize: 5, seed: 4, rank: r, worldSize: 3, workers: 0, flip: false }));
    expect(ranks.map((l) => l.stepsPerEpoch)).toEqual([2, 2, 2]);
    const keys = (await Promise.all(ranks.map((l) => collect(l.epoch(0))))).flatMap((bs) => bs.flatMap((b) => b.keys));
    expect(new Set(keys).size).toBe(30);
    ds.close();
  });

  it('onCorrupt: error throws a PfcError naming the record; skip drops and reports every bad key', async () => {
    const prefix = join(dir, 'bad');
    const w = new FaceRecWriter(prefix);
    for (let c = 0; c < 2; c++) for (let j = 0; j < 4; j++) w.add(c, encodeJpegJs(synthIdentityImage(c + 1, j), 90));
    w.close();
    // corrupt the JPEG of key 3 (fill its entropy-coded data with a bad marker) and truncate key 6's image
    const bytes = readFileSync(`${prefix}.rec`);
    const idx = new Map(readFileSync(`${prefix}.idx`, 'utf8').trim().split('\n').map((l) => l.split('\t').map(Number) as [number, number]));
    bytes.fill(0x00, idx.get(3)! + 8 + 24, idx.get(3)! + 8 + 24 + 200);
    bytes.writeUInt32LE(0xdeadbeef, idx.get(6)!);
    writeFileSync(`${prefix}.rec`, bytes);
    const ds = new RecordFaceDataset(`${prefix}.rec`);
    const strict = new FaceLoader(ds, { batchSize: 8, shuffle: false, workers: 0 });
    await expect(collect(strict.epoch(0))).rejects.toThrow(PfcError);
    for (const workers of [0, 2]) {
      const l = new FaceLoader(ds, { batchSize: 8, shuffle: false, onCorrupt: 'skip', workers });
      const [b] = await collect(l.epoch(0));
      await l.close();
      expect(b!.size).toBe(6);
      expect(b!.images.length).toBe(6 * 112 * 112 * 3);
      expect(b!.keys).toEqual([1, 2, 4, 5, 7, 8]);
      expect(l.skipped.map((s) => [s.key, s.code]).sort()).toEqual([
        [3, 'E_IMAGE_DECODE'],
        [6, 'E_RECORDIO_MAGIC'],
      ]);
      expect(l.skipped.find((s) => s.key === 6)!.message).toContain(`key 6 at byte offset ${idx.get(6)}`);
      expect(l.skipped.find((s) => s.key === 3)!.where).toContain(`key 3 at byte offset ${idx.get(3)}`);
    }
    ds.close();
    const report = await verifyRec(`${prefix}.rec`);
    expect(report.problems.map((p) => [p.key, p.code, p.offset])).toEqual(
      expect.arrayContaining([
        [3, 'E_IMAGE_DECODE', idx.get(3)],
        [6, 'E_RECORDIO_MAGIC', idx.get(6)],
      ]),
    );
  });

  it('rejects a batch larger than a rank share with dropLast, and images of the wrong size', async () => {
    const ds = new RecordFaceDataset(rec);
    expect(() => new FaceLoader(ds, { batchSize: 31 })).toThrow(expect.objectContaining({ code: 'E_BATCH_SIZE' }));
    const l = new FaceLoader(ds, { batchSize: 4, imageSize: [96, 96], workers: 0 });
    await expect(collect(l.epoch(0))).rejects.toThrow(expect.objectContaining({ code: 'E_IMAGE_SIZE' }));
    ds.close();
  });

  it.each([
    { workers: 0, prefetch: 1, bound: 1, given: 'prefetch 1' },
    { workers: 2, prefetch: 3, bound: 3, given: 'prefetch 3' },
    { workers: 2, prefetch: undefined, bound: 4, given: 'the default prefetch 2 × workers' },
  ])('a slow consumer never has more than $bound batch(es) read ahead ($given, workers $workers)', async ({ workers, prefetch, bound }) => {
    const ds = new RecordFaceDataset(rec);
    const batchSize = 2;
    // a batch's records are read when it enters the prefetch queue, before it is decoded: so the batches read but not
    // yet handed to the consumer bound those decoded and waiting. Unshuffled, sample i belongs to step i / batchSize.
    let lastRead = -1;
    const watched: FaceDataset = {
      length: ds.length,
      numClasses: ds.numClasses,
      source: ds.source,
      keyAt: (i) => ds.keyAt(i),
      read: (i) => {
        lastRead = Math.max(lastRead, Math.floor(i / batchSize));
        return ds.read(i);
      },
      close: () => ds.close(),
    };
    const l = new FaceLoader(watched, { batchSize, workers, shuffle: false, flip: false, ...(prefetch === undefined ? {} : { prefetch }) });
    expect(l.stepsPerEpoch).toBe(15);
    let consumed = 0;
    let ahead = 0;
    for await (const b of l.epoch(0)) {
      expect(b.step).toBe(consumed++);
      ahead = Math.max(ahead, lastRead + 1 - consumed);
      await new Promise((r) => setTimeout(r, 20)); // a slow training step: time for an unbounded loader to run ahead
      ahead = Math.max(ahead, lastRead + 1 - consumed);
    }
    await l.close();
    watched.close();
    expect(consumed).toBe(15);
    expect(lastRead).toBe(14);
    // never more than the bound, and the queue does fill up to it (the loader is not serial)
    expect(ahead).toBe(bound);
  });

  it('loads an image folder through the workers and can be closed mid-epoch', async () => {
    const root = join(dir, 'folder');
    for (let c = 0; c < 3; c++) {
      mkdirSync(join(root, `p${c}`), { recursive: true });
      for (let j = 0; j < 4; j++) writeFileSync(join(root, `p${c}`, `${j}.png`), encodePng(synthIdentityImage(c, j)));
    }
    const ds = new FolderFaceDataset(root);
    const l = new FaceLoader(ds, { batchSize: 4, workers: 2, shuffle: false, flip: false });
    const batches = await collect(l.epoch(0));
    expect(batches.map((b) => [...b.labels])).toEqual([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]]);
    const x = batches[1]!.images;
    const ref = synthIdentityImage(1, 0).data; // PNG is lossless: exact pixels
    let max = 0;
    for (let k = 0; k < ref.length; k++) max = Math.max(max, Math.abs(x[k]! - (ref[k]! - 127.5) / 127.5));
    expect(max).toBeLessThan(1e-6);
    for await (const b of l.epoch(1)) {
      expect(b.step).toBe(0);
      break;
    }
    await l.close();
    await expect(collect(l.epoch(2))).rejects.toThrow(expect.objectContaining({ code: 'E_LOADER_CLOSED' }));
  });
});
