import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PfcError, Rng, initBackend, readNpy } from '@pfc/core';
import { functionEmbedder } from './embed';
import { evaluateIjb, formatIjbTable, ijbModeName, ijbTable, imageFeatures, pairScores, readIjbProtocol, rocSvg, templateFeatures, writeIjbProtocol } from './ijb';
import { rocCurve } from './roc';
import { makeIjbProtocol, parseRocSvg, rocSvgProblems } from './testing.test-util';
import type { SyntheticIjb } from './testing.test-util';

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

/** 8-d feature: mean of each colour channel over the left and right half, plus two constant-ish terms. */
const feature = (x: Float32Array, n: number, size: number) => {
  const out = new Float32Array(n * 8);
  for (let b = 0; b < n; b++)
    for (let y = 0; y < size; y++)
      for (let xx = 0; xx < size; xx++)
        for (let c = 0; c < 3; c++) {
          const half = xx < size / 2 ? 0 : 1;
          out[b * 8 + half * 3 + c]! += x[((b * size + y) * size + xx) * 3 + c]! / (size * size);
          out[b * 8 + 6 + half]! += (x[((b * size + y) * size + xx) * 3 + c]! * (y / size)) / (size * size);
        }
  return out;
};

describe('IJB 1:1 pipeline', () => {
  let root: string;
  let proto: SyntheticIjb;
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'pfc-ijb-'));
    proto = await makeIjbProtocol(root, new Rng(11));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('reads the protocol it wrote', () => {
    const p = readIjbProtocol(root, 'IJBC');
    expect(p.names).toEqual(proto.images.map((i) => i.name));
    expect(Array.from(p.templates)).toEqual(proto.images.map((i) => i.template));
    expect(Array.from(p.pairs.label)).toEqual(proto.pairs.map((q) => q[2]));
    expect(p.landmarks[0]).toBe(38.2946);
    expect(p.faceness[3]).toBe(proto.images[3]!.score);
  });

  it('equals a direct implementation of the reference pooling and scoring (F1 N1 D1)', async () => {
    const embedder = functionEmbedder(feature);
    const dir = join(root, 'results');
    const res = await evaluateIjb(root, 'IJBC', embedder, { progress: false, resultDir: dir, job: 'synth' });
    // reference, written the reference's way: per template, np.where over all images, per media mean, sum, normalize
    const n = proto.images.length;
    const norm = (x: Uint8Array) => Float32Array.from(x, (v) => (v - 127.5) / 127.5);
    const flipPx = (x: Uint8Array) => {
      const o = new Uint8Array(x.length);
      for (let y = 0; y < 112; y++) for (let xx = 0; xx < 112; xx++) for (let c = 0; c < 3; c++) o[(y * 112 + 111 - xx) * 3 + c] = x[(y * 112 + xx) * 3 + c]!;
      return o;
    };
    const feats = proto.pixels.map((px, i) => {
      const a = feature(norm(px), 1, 112);
      const b = feature(norm(flipPx(px)), 1, 112);
      return Array.from(a, (v, k) => (v + b[k]!) * proto.images[i]!.score!);
    });
    const tids = [...new Set(proto.images.map((i) => i.template))].sort((a, b) => a - b);
    const tfeat = new Map<number, number[]>();
    for (const t of tids) {
      const idx = [...Array(n).keys()].filter((i) => proto.images[i]!.template === t);
      const medias = [...new Set(idx.map((i) => proto.images[i]!.media))].sort((a, b) => a - b);
      const sum = new Array(8).fill(0);
      for (const m of medias) {
        const im = idx.filter((i) => proto.images[i]!.media === m);
        for (let k = 0; k < 8; k++) sum[k] += im.reduce((s, i) => s + feats[i]![k]!, 0) / im.length;
      }
      const l = Math.hypot(...sum);
      tfeat.set(t, sum.map((v) => v / l));
    }
    const want = proto.pairs.map(([a, b]) => tfeat.get(a)!.reduce((s, v, k) => s + v * tfeat.get(b)![k]!, 0));
    // float32 features vs float64 reference: 1e-5 absolute
    want.forEach((w, i) => expect(Math.abs(res.scores[i]! - w)).toBeLessThan(1e-5));
    expect(res.table.method).toBe('synth-IJBC');
    expect(res.text).toContain('F1 N1 D1');
    expect(res.text.split('\n')[1]).toMatch(/^\|\s+Methods\s+\|\s+1e-06\s+\|/);
    expect(res.files.map((f) => f.slice(dir.length + 1))).toEqual(['synth/ijbc.npy', 'synth/IJBC.md', 'synth/IJBC.json', 'synth/IJBC.svg']);
    expect(Array.from(readNpy(join(dir, 'synth/ijbc.npy')).data as Float32Array)).toEqual(Array.from(res.scores));
    // the SVG draws the ROC of these scores (perfect here: FPR jumps from 0 to 1, so no point in 1e-6…0.1 and an
    // empty polyline; the rocSvg test below checks real curves)
    expect(rocSvgProblems(readFileSync(join(dir, 'synth/IJBC.svg'), 'utf8'), [res.roc])).toEqual([]);
    expect(res.roc).toEqual(rocCurve(res.scores, proto.pairs.map((q) => q[2])));
    // genuine pairs score above impostors on this easy problem
    expect(res.table.auc).toBeGreaterThan(0.9);
  });

  it('writes the same protocol from parallel columns', () => {
    const root4 = mkdtempSync(join(tmpdir(), 'pfc-ijb-cols-'));
    try {
      writeIjbProtocol(root4, 'IJBC', {
        images: proto.images.map((i) => i.data),
        templates: proto.images.map((i) => i.template),
        media: proto.images.map((i) => i.media),
        scores: proto.images.map((i) => i.score!),
        pairs: proto.pairs,
      });
      for (const f of ['ijbc_face_tid_mid.txt', 'ijbc_name_5pts_score.txt', 'ijbc_template_pair_label.txt']) {
        expect(readFileSync(join(root4, 'meta', f), 'utf8')).toBe(readFileSync(join(root, 'meta', f), 'utf8'));
      }
      expect(readFileSync(join(root4, 'loose_crop', '7.png')).equals(readFileSync(join(root, 'loose_crop', '7.png')))).toBe(true);
      expect(() => writeIjbProtocol(root4, 'IJBC', { images: [new Uint8Array(1)], templates: [1, 2], media: [1], pairs: [] })).toThrow(/templates.length/);
    } finally {
      rmSync(root4, { recursive: true, force: true });
    }
  });

  it('missing images: an error naming the file, or a counted skip', async () => {
    const root2 = mkdtempSync(join(tmpdir(), 'pfc-ijb-miss-'));
    try {
      writeIjbProtocol(root2, 'IJBB', { images: proto.images, pairs: proto.pairs });
      rmSync(join(root2, 'loose_crop', '3.png'));
      const embedder = functionEmbedder(feature);
      await expect(evaluateIjb(root2, 'IJBB', embedder, { progress: false })).rejects.toThrow(/loose_crop\/3\.png/);
      const res = await evaluateIjb(root2, 'IJBB', embedder, { progress: false, skipMissing: true });
      expect(res.skipped).toEqual(['3.png']);
      expect(res.text).toContain('1 missing images skipped');
    } finally {
      rmSync(root2, { recursive: true, force: true });
    }
  });

  it('a meta line with the wrong number of fields names file and line', () => {
    const root3 = mkdtempSync(join(tmpdir(), 'pfc-ijb-bad-'));
    try {
      writeIjbProtocol(root3, 'IJBC', { images: proto.images.slice(0, 2), pairs: [[1, 1, 1]] });
      const lm = join(root3, 'meta/ijbc_name_5pts_score.txt');
      const lines = readFileSync(lm, 'utf8').split('\n');
      lines[1] = lines[1]!.split(' ').slice(0, 11).join(' ');
      writeFileSync(lm, lines.join('\n'));
      let err: unknown;
      try {
        readIjbProtocol(root3, 'IJBC');
      } catch (e) {
        err = e;
      }
      expect(PfcError.is(err, 'E_IJB_META')).toBe(true);
      expect((err as Error).message).toContain(`${lm}:2: expected 12`);
      writeFileSync(join(root3, 'meta/ijbc_template_pair_label.txt'), '1 1 1\n1 2\n');
      writeFileSync(lm, lines.join('\n').replace(lines[1]!, `${lines[1]} 1`));
      expect(() => readIjbProtocol(root3, 'IJBC')).toThrow(/ijbc_template_pair_label\.txt:2: expected 3/);
      rmSync(join(root3, 'meta/ijbc_face_tid_mid.txt'));
      expect(() => readIjbProtocol(root3, 'IJBC')).toThrow(/ijbc_face_tid_mid\.txt/);
      expect(existsSync(root3)).toBe(true);
    } finally {
      rmSync(root3, { recursive: true, force: true });
    }
  });
});

describe('IJB building blocks', () => {
  it('pools media by mean and templates by sum, then normalises', () => {
    // template 7: media 1 has images (1,0) and (3,0) -> mean (2,0); media 2 has (0,2) -> template (2,2)/|.|
    const feats = Float64Array.from([1, 0, 3, 0, 0, 2, 5, 5]);
    const res = templateFeatures(feats, 2, Int32Array.from([7, 7, 7, 3]), Int32Array.from([1, 1, 2, 9]));
    expect(Array.from(res.templateIds)).toEqual([3, 7]);
    expect(res.features[2]).toBeCloseTo(Math.SQRT1_2, 6);
    expect(res.features[3]).toBeCloseTo(Math.SQRT1_2, 6);
    // mask out image 0: media 1 -> (3,0), template (3,2)
    const masked = templateFeatures(feats, 2, Int32Array.from([7, 7, 7, 3]), Int32Array.from([1, 1, 2, 9]), Uint8Array.from([0, 1, 1, 1]));
    expect(masked.features[2]! / masked.features[3]!).toBeCloseTo(1.5, 6);
    expect(() => pairScores(res.templateIds, res.features, 2, Int32Array.from([3]), Int32Array.from([4]))).toThrow(/template 4/);
  });

  it('the SIMD scoring kernel equals the JS loop (and dims that are not a multiple of 16 use JS)', () => {
    const rng = new Rng(5);
    for (const dim of [512, 128, 20]) {
      const T = 300;
      const f = Float32Array.from({ length: T * dim }, () => rng.normal() / Math.sqrt(dim));
      const ids = Int32Array.from({ length: T }, (_, i) => 3 * i + 1);
      const n = 5000;
      const t1 = Int32Array.from({ length: n }, () => ids[rng.int(T)]!);
      const t2 = Int32Array.from({ length: n }, () => ids[rng.int(T)]!);
      const fast = pairScores(ids, f, dim, t1, t2);
      const js = pairScores(ids, f, dim, t1, t2, 'js');
      // float32 lane accumulation against float64 accumulation of float32 products: 1e-6 absolute on unit-norm-ish rows
      for (let p = 0; p < n; p++) expect(Math.abs(fast[p]! - js[p]!)).toBeLessThan(1e-6);
    }
    // ≥ 65536 pairs take the cache-blocked order (sorted by row blocks, results scattered back)
    const T = 400;
    const dim = 32;
    const f = Float32Array.from({ length: T * dim }, () => rng.normal() / Math.sqrt(dim));
    const ids = Int32Array.from({ length: T }, (_, i) => i);
    const n = 70000;
    const t1 = Int32Array.from({ length: n }, () => rng.int(T));
    const t2 = Int32Array.from({ length: n }, () => rng.int(T));
    const fast = pairScores(ids, f, dim, t1, t2);
    const js = pairScores(ids, f, dim, t1, t2, 'js');
    for (let p = 0; p < n; p++) expect(Math.abs(fast[p]! - js[p]!)).toBeLessThan(1e-6);
    expect(pairScores(Int32Array.from([1]), new Float32Array(16), 16, new Int32Array(0), new Int32Array(0))).toHaveLength(0);
  });

  it('applies the test modes', () => {
    const e = Float32Array.from([3, 4]);
    const f = Float32Array.from([3, 4]);
    const faceness = Float64Array.from([0.5]);
    expect(Array.from(imageFeatures(e, 2, { flipEmbeddings: f, faceness }))).toEqual([3, 4]);
    const n0 = imageFeatures(e, 2, { flip: false, normScore: false, detectorScore: false, faceness });
    // float32 output: 1e-7 absolute
    expect(Math.abs(n0[0]! - 0.6)).toBeLessThan(1e-7);
    expect(Math.abs(n0[1]! - 0.8)).toBeLessThan(1e-7);
    expect(ijbModeName({ flip: false })).toBe('F0 N1 D1');
  });

  it('rocSvg draws each ROC inside the frame: monotone, every point with 1e-6 <= FPR <= 0.1 at its place', () => {
    // 300k impostors reach FPR 3.3e-6, so the curve spans the whole log axis; two methods, two polylines
    const rng = new Rng(21);
    const curves = [1.5, 3].map((gap, k) => {
      const P = 3000;
      const N = 300000;
      const scores = Float64Array.from({ length: P + N }, (_, i) => rng.normal() + (i < P ? gap : 0));
      const labels = Uint8Array.from({ length: P + N }, (_, i) => (i < P ? 1 : 0));
      const { table, roc } = ijbTable(scores, labels, `m${k}`, '-');
      return { roc, label: table.method, auc: table.auc };
    });
    const svg = rocSvg(curves, 'ROC <test>');
    expect(rocSvgProblems(svg, curves.map((c) => c.roc))).toEqual([]);
    const parsed = parseRocSvg(svg);
    expect(parsed.viewBox).toEqual({ x: 0, y: 0, width: 640, height: 480 });
    for (const [ci, pts] of parsed.curves.entries()) {
      const { fpr } = curves[ci]!.roc;
      const inRange = Array.from(fpr).filter((f) => f >= 1e-6 && f <= 0.1);
      // a real curve: hundreds of points, from the first FPR step (1/300000) to the last point before FPR 0.1
      expect(inRange.length).toBeGreaterThan(100);
      expect(pts).toHaveLength(inRange.length);
      expect(pts[0]![0]).toBeCloseTo(parsed.frame.x + ((Math.log10(inRange[0]!) + 6) / 5) * parsed.frame.width, 2);
      expect(pts.at(-1)![0]).toBeCloseTo(parsed.frame.x + ((Math.log10(inRange.at(-1)!) + 6) / 5) * parsed.frame.width, 2);
    }
    expect(svg).toContain('ROC &lt;test&gt;');
    // the checker itself rejects a wrong drawing: curves swapped, one point moved, points reversed
    expect(rocSvgProblems(svg, [curves[1]!.roc, curves[0]!.roc]).length).toBeGreaterThan(0);
    const pts0 = parsed.curves[0]!.map(([x, y]) => `${x.toFixed(2)},${y.toFixed(2)}`);
    const moved = svg.replace(pts0.join(' '), [...pts0.slice(0, -1), `${parsed.curves[0]!.at(-1)![0].toFixed(2)},${(parsed.curves[0]!.at(-1)![1] + 0.5).toFixed(2)}`].join(' '));
    expect(moved).not.toBe(svg);
    expect(rocSvgProblems(moved, curves.map((c) => c.roc))).toContainEqual(expect.stringMatching(/^curve 0 point \d+: \(.*expected/));
    const reversed = svg.replace(pts0.join(' '), [...pts0].reverse().join(' '));
    expect(rocSvgProblems(reversed, curves.map((c) => c.roc)).some((p) => /x decreases/.test(p))).toBe(true);
  });

  it('prints the reference PrettyTable layout', () => {
    const t = { method: 'ijbc-IJBC', mode: 'F1 N1 D1', fars: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1], tar: ['48.65', '48.65', '73.30', '86.30', '96.30', '99.67'], readings: [], auc: 0.99 };
    expect(formatIjbTable([t])).toBe(
      [
        '+-----------+-------+-------+--------+-------+-------+-------+',
        '|  Methods  | 1e-06 | 1e-05 | 0.0001 | 0.001 |  0.01 |  0.1  |',
        '+-----------+-------+-------+--------+-------+-------+-------+',
        '| ijbc-IJBC | 48.65 | 48.65 | 73.30  | 86.30 | 96.30 | 99.67 |',
        '+-----------+-------+-------+--------+-------+-------+-------+',
      ].join('\n'),
    );
  });
});
