import sharp from 'sharp';
import type { Rng } from '@pfc/core';
import { writeIjbProtocol } from './ijb';
import type { IjbImageSpec, IjbTarget } from './ijb';
import type { RocCurve } from './roc';

/** A synthetic IJB protocol as {@link makeIjbProtocol} wrote it. */
export interface SyntheticIjb {
  images: IjbImageSpec[];
  /** The decoded 112×112 RGB pixels of each image (PNG, so exactly what the reader decodes). */
  pixels: Uint8Array[];
  pairs: [number, number, 0 | 1][];
}

/**
 * Writes an IJB-format protocol of already aligned 112×112 PNG crops under `root`: per identity 2 templates
 * (ids `10·id + 1`, `10·id + 2`), each of 2 media (`100·template + m`) holding 1 or 2 images; each identity has its own
 * left-half and right-half colour plus noise. Pairs: template 1 of every identity against template 2 of itself
 * (genuine) and of every later identity (impostor). Image names are `1.png`, `2.png`, … in file order.
 */
export async function makeIjbProtocol(root: string, rng: Rng, options: { identities?: number; target?: IjbTarget } = {}): Promise<SyntheticIjb> {
  const ids = options.identities ?? 6;
  const size = 112;
  const images: IjbImageSpec[] = [];
  const pixels: Uint8Array[] = [];
  let name = 0;
  for (let id = 0; id < ids; id++) {
    const base = [rng.uniform() * 255, rng.uniform() * 255, rng.uniform() * 255, rng.uniform() * 255, rng.uniform() * 255, rng.uniform() * 255];
    for (let t = 0; t < 2; t++) {
      const template = id * 10 + t + 1;
      for (let m = 0; m < 2; m++) {
        const count = 1 + ((id + t + m) % 2);
        for (let k = 0; k < count; k++) {
          const px = new Uint8Array(size * size * 3);
          for (let y = 0; y < size; y++)
            for (let x = 0; x < size; x++)
              for (let c = 0; c < 3; c++) px[(y * size + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(base[(x < 56 ? 0 : 3) + c]! + rng.normal() * 20)));
          const data = await sharp(px, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
          images.push({ name: `${++name}.png`, data, template, media: 100 * template + m, score: 0.5 + 0.5 * rng.uniform() });
          pixels.push(px);
        }
      }
    }
  }
  const pairs: [number, number, 0 | 1][] = [];
  for (let a = 0; a < ids; a++) for (let b = a; b < ids; b++) pairs.push([a * 10 + 1, b * 10 + 2, a === b ? 1 : 0]);
  writeIjbProtocol(root, options.target ?? 'IJBC', { images, pairs });
  return { images, pixels, pairs };
}

/** What {@link parseRocSvg} reads back from an SVG written by `rocSvg`. */
export interface ParsedRocSvg {
  viewBox: { x: number; y: number; width: number; height: number };
  /** The plot frame (the unfilled black-stroked rectangle): FPR 1e-6…1e-1 on a log scale left to right, TPR 0.3…1 bottom to top. */
  frame: { x: number; y: number; width: number; height: number };
  /** The points of each `<polyline>`, in document order, as [x, y] SVG user units. */
  curves: [number, number][][];
}

/**
 * Parses the parts of a ROC SVG that carry data, with regular expressions (the writer's output is one element per
 * line with double-quoted attributes), so that tests can check the drawn curve against the ROC it should show.
 */
export function parseRocSvg(svg: string): ParsedRocSvg {
  const attr = (tag: string, name: string): string => {
    const m = new RegExp(`\\s${name}="([^"]*)"`).exec(tag);
    if (!m) throw new Error(`parseRocSvg: no ${name}="…" in ${tag.slice(0, 120)}`);
    return m[1]!;
  };
  const root = /^<svg\b[^>]*>/.exec(svg);
  if (!root) throw new Error('parseRocSvg: the document does not start with <svg …>');
  const [vx, vy, vw, vh] = attr(root[0], 'viewBox').trim().split(/\s+/).map(Number);
  const frameTag = [...svg.matchAll(/<rect\b[^>]*>/g)].map((m) => m[0]).find((t) => /fill="none"/.test(t) && /stroke="black"/.test(t));
  if (!frameTag) throw new Error('parseRocSvg: no plot frame (<rect fill="none" stroke="black">)');
  const num = (tag: string, name: string) => Number(attr(tag, name));
  const curves = [...svg.matchAll(/<polyline\b[^>]*>/g)].map((m) => {
    const pts = attr(m[0], 'points').trim();
    return pts === '' ? [] : pts.split(/\s+/).map((p) => p.split(',').map(Number) as [number, number]);
  });
  return {
    viewBox: { x: vx!, y: vy!, width: vw!, height: vh! },
    frame: { x: num(frameTag, 'x'), y: num(frameTag, 'y'), width: num(frameTag, 'width'), height: num(frameTag, 'height') },
    curves,
  };
}

/**
 * The points a ROC plot must show, computed from the curve itself (not from the writer): every ROC point with
 * 1e-6 ≤ FPR ≤ 0.1 in order, FPR on the frame's log axis 1e-6…1e-1, TPR clamped to the frame's 0.3…1 axis.
 */
export function expectedRocPoints(roc: RocCurve, frame: ParsedRocSvg['frame']): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < roc.fpr.length; i++) {
    const f = roc.fpr[i]!;
    if (f < 1e-6 || f > 0.1) continue;
    const t = Math.min(1, Math.max(0.3, roc.tpr[i]!));
    out.push([frame.x + ((Math.log10(f) + 6) / 5) * frame.width, frame.y + frame.height - ((t - 0.3) / 0.7) * frame.height]);
  }
  return out;
}

/**
 * Checks an SVG written by `rocSvg` against the ROC curves it was given and returns the problems found (empty when it
 * is right): one polyline per curve; every point inside the viewBox and the plot frame; x non-decreasing and y
 * non-increasing (FPR and TPR non-decreasing: a ROC); as many points as the curve has with 1e-6 ≤ FPR ≤ 0.1, each at
 * its {@link expectedRocPoints} position within 0.0051 user units (the writer prints 2 decimals), so the endpoints too.
 */
export function rocSvgProblems(svg: string, rocs: readonly RocCurve[]): string[] {
  const problems: string[] = [];
  const { viewBox: vb, frame, curves } = parseRocSvg(svg);
  if (curves.length !== rocs.length) problems.push(`${curves.length} polylines for ${rocs.length} curves`);
  const tol = 0.0051;
  curves.forEach((pts, ci) => {
    pts.forEach(([x, y], i) => {
      if (!Number.isFinite(x) || !Number.isFinite(y)) problems.push(`curve ${ci} point ${i} (${x}, ${y}) is not finite`);
      if (x < vb.x || x > vb.x + vb.width || y < vb.y || y > vb.y + vb.height) problems.push(`curve ${ci} point ${i} (${x}, ${y}) is outside the viewBox`);
      if (x < frame.x - tol || x > frame.x + frame.width + tol || y < frame.y - tol || y > frame.y + frame.height + tol) problems.push(`curve ${ci} point ${i} (${x}, ${y}) is outside the plot frame`);
      if (i > 0 && x < pts[i - 1]![0]) problems.push(`curve ${ci} point ${i}: x decreases (${pts[i - 1]![0]} -> ${x})`);
      if (i > 0 && y > pts[i - 1]![1]) problems.push(`curve ${ci} point ${i}: TPR decreases (y ${pts[i - 1]![1]} -> ${y})`);
    });
    const roc = rocs[ci];
    if (!roc) return;
    const want = expectedRocPoints(roc, frame);
    if (pts.length !== want.length) problems.push(`curve ${ci}: ${pts.length} points, the ROC has ${want.length} with 1e-6 <= FPR <= 0.1`);
    for (let i = 0; i < Math.min(pts.length, want.length); i++) {
      const [x, y] = pts[i]!;
      const [wx, wy] = want[i]!;
      if (Math.abs(x - wx) > tol || Math.abs(y - wy) > tol) problems.push(`curve ${ci} point ${i}: (${x}, ${y}), expected (${wx.toFixed(3)}, ${wy.toFixed(3)})`);
    }
  });
  return problems;
}

/**
 * Crafted malicious pickles whose loading with Python's `pickle` runs `touch <sentinel>` through `os.system`
 * (GLOBAL + REDUCE), as bytes to write to a `.bin`, with the byte offset of the GLOBAL opcode a safe reader must stop at.
 * - `protocol0`: the classic text pickle `cos\nsystem\n(S'touch …'\ntR.`
 * - `hiddenInBin`: a protocol 2 `(bins, issame_list)` tuple that starts like a real `.bin` (two images) and calls
 *   `os.system` while building `issame_list`
 */
export function maliciousPickles(sentinel: string): { name: string; bytes: Uint8Array; globalOffset: number }[] {
  if (/['\s\\]/.test(sentinel)) throw new Error(`maliciousPickles: sentinel path must not contain quotes, spaces or backslashes: ${sentinel}`);
  const enc = (s: string) => Uint8Array.from(Buffer.from(s, 'latin1'));
  const cmd = `touch ${sentinel}`;
  const len = Buffer.alloc(4);
  len.writeUInt32LE(cmd.length);
  const p0 = `cos\nsystem\n(S'${cmd}'\ntR.`;
  const p2 = `\x80\x02](U\x01aU\x01be](cos\nsystem\nX${len.toString('latin1')}${cmd}\x85Re\x86.`;
  return [
    { name: 'protocol0', bytes: enc(p0), globalOffset: p0.indexOf('cos\n') },
    { name: 'hiddenInBin', bytes: enc(p2), globalOffset: p2.indexOf('cos\n') },
  ];
}
