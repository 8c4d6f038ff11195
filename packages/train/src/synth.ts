import { Rng, assertArg } from '@pfc/core';

/** Options of {@link synthFaces}. */
export interface SynthFacesOptions {
  /** Identities. */
  numIdentities: number;
  /** Images per identity. */
  imagesPerIdentity: number;
  /** Square image side. */
  size: number;
  seed: number;
  /** Offset added to every identity's seed index, so two calls with different offsets give disjoint identities. */
  identityOffset?: number;
  /** Standard deviation of the per-image pixel noise, in [0, 255] units (default 12). */
  noise?: number;
  /** Largest per-image shift in pixels (default 1). */
  maxShift?: number;
}

/**
 * A learnable synthetic identity set as uint8 RGB HWC images: each identity is a smooth random pattern (a few
 * coloured 2-D waves, drawn from a seed derived from the identity index), each image of it the pattern shifted by
 * up to `maxShift` pixels, with a random brightness/contrast change and pixel noise. Identities drawn from the same
 * distribution but different indices are unseen faces for verification.
 * @returns `images[i]` (size·size·3 bytes) and `labels[i]` (0…numIdentities−1), identity-major order
 */
export function synthFaces(o: SynthFacesOptions): { images: Uint8Array[]; labels: Int32Array } {
  assertArg(Number.isInteger(o.numIdentities) && o.numIdentities > 0, 'synthFaces', 'numIdentities', o.numIdentities, 'a positive integer');
  assertArg(Number.isInteger(o.imagesPerIdentity) && o.imagesPerIdentity > 0, 'synthFaces', 'imagesPerIdentity', o.imagesPerIdentity, 'a positive integer');
  const S = o.size;
  const noise = o.noise ?? 12;
  const maxShift = o.maxShift ?? 1;
  const base = new Rng(o.seed);
  const images: Uint8Array[] = [];
  const labels = new Int32Array(o.numIdentities * o.imagesPerIdentity);
  const pad = S + 2 * maxShift;
  const proto = new Float32Array(pad * pad * 3);
  for (let id = 0; id < o.numIdentities; id++) {
    const r = base.fork(`identity-${id + (o.identityOffset ?? 0)}`);
    proto.fill(0);
    const waves = 6;
    for (let w = 0; w < waves; w++) {
      const fx = r.normal(0, 2.2) / S;
      const fy = r.normal(0, 2.2) / S;
      const ph = r.uniform() * 2 * Math.PI;
      const col = [r.normal(0, 1), r.normal(0, 1), r.normal(0, 1)];
      for (let y = 0; y < pad; y++) {
        for (let x = 0; x < pad; x++) {
          const v = Math.sin(2 * Math.PI * (fx * x + fy * y) + ph);
          for (let c = 0; c < 3; c++) proto[(y * pad + x) * 3 + c] = proto[(y * pad + x) * 3 + c]! + col[c]! * v;
        }
      }
    }
    const ir = r.fork('images');
    for (let k = 0; k < o.imagesPerIdentity; k++) {
      const dx = ir.int(2 * maxShift + 1);
      const dy = ir.int(2 * maxShift + 1);
      const gain = 1 + ir.normal(0, 0.1);
      const bias = ir.normal(0, 10);
      const img = new Uint8Array(S * S * 3);
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) {
          for (let c = 0; c < 3; c++) {
            const v = 127.5 + gain * 28 * proto[((y + dy) * pad + (x + dx)) * 3 + c]! + bias + ir.normal(0, noise);
            img[(y * S + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
          }
        }
      }
      images.push(img);
      labels[id * o.imagesPerIdentity + k] = id;
    }
  }
  return { images, labels };
}

/** uint8 HWC images → one NHWC float32 array in [-1, 1] ((x − 127.5)/127.5, the reference's normalisation). */
export function normalizeImages(images: readonly Uint8Array[]): Float32Array {
  const per = images[0]?.length ?? 0;
  const out = new Float32Array(images.length * per);
  images.forEach((img, i) => {
    for (let j = 0; j < per; j++) out[i * per + j] = (img[j]! - 127.5) / 127.5;
  });
  return out;
}

/**
 * Verification pairs over held-out identities, as a `.bin` lays them out: pair p = images 2p and 2p+1, alternating
 * genuine (same identity, different images) and impostor pairs.
 * @param imagesPerIdentity at least 2
 */
export function makePairs(labels: Int32Array, numPairs: number, seed: number): { first: Int32Array; second: Int32Array; issame: boolean[] } {
  const rng = new Rng(seed).fork('pairs');
  const byId = new Map<number, number[]>();
  labels.forEach((l, i) => {
    const list = byId.get(l) ?? [];
    list.push(i);
    byId.set(l, list);
  });
  const ids = [...byId.keys()];
  const first = new Int32Array(numPairs);
  const second = new Int32Array(numPairs);
  const issame: boolean[] = [];
  for (let p = 0; p < numPairs; p++) {
    const same = p % 2 === 0;
    const a = ids[rng.int(ids.length)]!;
    const la = byId.get(a)!;
    const i = la[rng.int(la.length)]!;
    let j: number;
    if (same) {
      do j = la[rng.int(la.length)]!;
      while (j === i && la.length > 1);
    } else {
      let b: number;
      do b = ids[rng.int(ids.length)]!;
      while (b === a);
      const lb = byId.get(b)!;
      j = lb[rng.int(lb.length)]!;
    }
    first[p] = i;
    second[p] = j;
    issame.push(same);
  }
  return { first, second, issame };
}
