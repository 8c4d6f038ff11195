import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, readNpy, writeNpy } from '@pfc/core';
import { ARCFACE_TEMPLATE, alignFace, estimateSimilarity, warpAffine } from './align';
import type { RgbImage } from './image';

/**
 * Alignment against the libraries the reference calls (Debian's python3-opencv 4.6 and python3-skimage 0.19, installed
 * by `.ci/run`; skipped where missing): skimage's SimilarityTransform on float32 landmarks and InsightFace's float32
 * template, then cv2.warpAffine(img, M, (112, 112), borderValue=0).
 */
const python = [process.env.PFC_OPENCV_PYTHON, 'python3', '/usr/bin/python3'].find(
  (p) => p && spawnSync(p, ['-c', 'import cv2, skimage, numpy'], { stdio: 'ignore' }).status === 0,
);
const SCRIPT = join(__dirname, '__fixtures__', 'opencv_align.py');

/** A smooth random RGB image with sharp edges too (so interpolation errors would show). */
function image(rng: Rng, w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  const f = Array.from({ length: 9 }, () => rng.uniform() * 0.2);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        const v = 127.5 + 90 * Math.sin(f[c]! * x + f[c + 3]! * y + c) + ((x >> 3) + (y >> 3)) % 2 * 30 - 15;
        data[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v + rng.normal(0, 6))));
      }
    }
  }
  return { width: w, height: h, data };
}

(python ? describe : describe.skip)('alignment against skimage + OpenCV', () => {
  it('warpAffine equals cv2.warpAffine bit for bit; estimateSimilarity and the whole crop equal skimage + OpenCV to float32 precision', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-opencv-'));
    try {
      const rng = new Rng(42);
      const cases: { landmarks: number[][]; given: number[] }[] = [];
      const images: RgbImage[] = [];
      for (let i = 0; i < 60; i++) {
        const w = 120 + rng.int(200);
        const h = 120 + rng.int(200);
        // a face of random size, rotation and position (partly outside the image at times), landmarks in float32
        const scale = 0.6 + rng.uniform() * 2.2;
        const angle = (rng.uniform() - 0.5) * 1.2;
        const [cx, cy] = [rng.uniform() * w, rng.uniform() * h];
        const landmarks = ARCFACE_TEMPLATE.map(([x, y]) => {
          const [u, v] = [(x - 56) * scale + rng.normal(0, 1.5), (y - 72) * scale + rng.normal(0, 1.5)];
          return [Math.fround(cx + u * Math.cos(angle) - v * Math.sin(angle)), Math.fround(cy + u * Math.sin(angle) + v * Math.cos(angle))];
        });
        // an arbitrary affine matrix (not a similarity) for the warp alone
        const given = [1 + rng.normal(0, 0.3), rng.normal(0, 0.3), rng.normal(0, 20), rng.normal(0, 0.3), 1 + rng.normal(0, 0.3), rng.normal(0, 20)];
        cases.push({ landmarks, given });
        const img = image(rng, w, h);
        images.push(img);
        writeNpy(join(dir, `img${i}.npy`), img.data, [h, w, 3], 'u1');
      }
      writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases));
      const p = spawnSync(python!, [SCRIPT, dir], { encoding: 'utf8', timeout: 300_000 });
      if (p.status !== 0) throw new Error(`opencv_align.py failed (${p.status}): ${p.stderr}`);
      let worstM = 0;
      let differing = 0;
      let worstByte = 0;
      let bytes = 0;
      for (let i = 0; i < cases.length; i++) {
        const m = estimateSimilarity(cases[i]!.landmarks);
        const ref = readNpy(join(dir, `m${i}.npy`)).data as Float64Array;
        for (let k = 0; k < 6; k++) worstM = Math.max(worstM, Math.abs(m[k]! - ref[k]!) / Math.max(1, Math.abs(ref[k]!)));
        // the same matrix through both warps: equal bytes (OpenCV's fixed-point bilinear arithmetic)
        const given = readNpy(join(dir, `given${i}.npy`)).data as Uint8Array;
        expect(Buffer.from(warpAffine(images[i]!, cases[i]!.given).data).equals(Buffer.from(given))).toBe(true);
        // the whole of norm_crop: landmarks → matrix → crop. skimage fits in float32 (numpy keeps the landmarks'
        // dtype through its SVD), we in float64: the matrices differ by ~1e-7 relative, which moves a few of OpenCV's
        // 1/32-pixel sampling positions to the neighbouring cell; those bytes differ by a level or two
        const crop = readNpy(join(dir, `crop${i}.npy`)).data as Uint8Array;
        const ours = alignFace(images[i]!, cases[i]!.landmarks).data;
        for (let k = 0; k < crop.length; k++) {
          const d = Math.abs(ours[k]! - crop[k]!);
          if (d > 0) differing++;
          worstByte = Math.max(worstByte, d);
        }
        bytes += crop.length;
      }
      process.stderr.write(
        `estimateSimilarity vs skimage: max relative |diff| ${worstM.toExponential(2)}; crops: ${differing} of ${bytes} bytes differ, by at most ${worstByte}\n`,
      );
      // float32 arithmetic in skimage: the translation is a difference of products of coordinates of a few hundred
      // pixels, so float32 rounding (6e-8) grows to a few 1e-6 of it (measured 4e-6)
      expect(worstM).toBeLessThan(2e-5);
      expect(differing / bytes).toBeLessThan(1e-3);
      expect(worstByte).toBeLessThanOrEqual(16); // next to this image's 30-level checkerboard edges
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
