import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PfcError, assertArg, writeFileAtomic, writeNpy } from '@pfc/core';
import { ARCFACE_TEMPLATE_DECIMAL, alignFace } from './align';
import type { WarpOptions } from './align';
import { decodeImage } from './image';
import { embedImages } from './embed';
import type { EmbedImagesOptions, Embedder } from './embed';
import { IJB_FARS, auc, formatTar, rocCurve, tarAtFar } from './roc';
import { wasmPairDots } from './dot-wasm';
import type { RocCurve, TarAtFar } from './roc';

/** The two IJB 1:1 protocols. */
export type IjbTarget = 'IJBB' | 'IJBC';

/** One IJB protocol as read from its `meta/` files. */
export interface IjbProtocol {
  root: string;
  target: IjbTarget;
  /** Image names (relative to `loose_crop/`), in file order. */
  names: string[];
  /** Template id per image. */
  templates: Int32Array;
  /** Media id per image. */
  medias: Int32Array;
  /** [n, 5, 2] landmarks in loose-crop pixels, float64. */
  landmarks: Float64Array;
  /** Detector (faceness) score per image. */
  faceness: Float64Array;
  /** Pair templates and labels (1 genuine / 0 impostor). */
  pairs: { t1: Int32Array; t2: Int32Array; label: Uint8Array };
}

/** The three meta files of a protocol (lower-case target as the reference, e.g. `ijbc_face_tid_mid.txt`). */
export function ijbMetaPaths(root: string, target: IjbTarget): { faces: string; pairs: string; landmarks: string; images: string } {
  const pick = (suffix: string) => {
    const lower = join(root, 'meta', `${target.toLowerCase()}_${suffix}`);
    const upper = join(root, 'meta', `${target}_${suffix}`);
    return existsSync(lower) || !existsSync(upper) ? lower : upper;
  };
  return { faces: pick('face_tid_mid.txt'), pairs: pick('template_pair_label.txt'), landmarks: pick('name_5pts_score.txt'), images: join(root, 'loose_crop') };
}

function readText(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new PfcError('E_NOT_FOUND', `IJB meta file '${path}' cannot be read: ${(cause as Error).message}`, { cause, details: { file: path } });
  }
}

/**
 * Splits a whitespace-separated text file into lines of fields, calling `onLine(fields, lineNumber)`; blank lines
 * are skipped. A line with a field count other than `expected` is an `E_IJB_META` error naming file and line.
 */
function forEachLine(path: string, expected: number, onLine: (fields: string[], line: number) => void): void {
  const text = readText(path).toString('latin1');
  let lineNo = 0;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    lineNo++;
    const line = text.slice(start, end).trim();
    start = end + 1;
    if (line.length === 0) {
      if (end === text.length) break;
      continue;
    }
    const fields = line.split(/\s+/);
    if (fields.length !== expected) {
      throw new PfcError('E_IJB_META', `${path}:${lineNo}: expected ${expected} space-separated fields, found ${fields.length}: ${JSON.stringify(line.slice(0, 120))}`, {
        details: { file: path, line: lineNo, fields: fields.length, expected },
      });
    }
    onLine(fields, lineNo);
    if (end === text.length) break;
  }
}

function parseNum(s: string, path: string, line: number, what: string, integer: boolean): number {
  const v = Number(s);
  if (!Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new PfcError('E_IJB_META', `${path}:${line}: ${what} ${JSON.stringify(s)} is not ${integer ? 'an integer' : 'a number'}`, { details: { file: path, line, value: s } });
  }
  return v;
}

/**
 * Fast reader of the pair file (`t1 t2 label` per line; 8–16 M lines): parses bytes without splitting strings.
 */
function readPairs(path: string): IjbProtocol['pairs'] {
  const buf = readText(path);
  let cap = 1 << 16;
  let t1 = new Int32Array(cap);
  let t2 = new Int32Array(cap);
  let lab = new Uint8Array(cap);
  let n = 0;
  let i = 0;
  let line = 0;
  const len = buf.length;
  const fields = new Array<number>(4);
  while (i < len) {
    line++;
    let k = 0;
    let lineStart = i;
    // parse integers separated by spaces/tabs until newline
    while (i < len && buf[i] !== 0x0a) {
      const c = buf[i]!;
      if (c === 0x20 || c === 0x09 || c === 0x0d) {
        i++;
        continue;
      }
      let neg = false;
      if (c === 0x2d) {
        neg = true;
        i++;
      }
      let v = 0;
      let digits = 0;
      while (i < len && buf[i]! >= 0x30 && buf[i]! <= 0x39) {
        v = v * 10 + (buf[i]! - 0x30);
        i++;
        digits++;
      }
      if (digits === 0 || (i < len && buf[i] !== 0x20 && buf[i] !== 0x09 && buf[i] !== 0x0d && buf[i] !== 0x0a)) {
        let e = buf.indexOf(0x0a, lineStart);
        if (e < 0) e = len;
        throw new PfcError('E_IJB_META', `${path}:${line}: expected 3 integer fields "template_id_1 template_id_2 label", got ${JSON.stringify(buf.toString('latin1', lineStart, Math.min(e, lineStart + 120)))}`, {
          details: { file: path, line },
        });
      }
      if (k < 4) fields[k] = neg ? -v : v;
      k++;
    }
    i++; // newline
    if (k === 0) continue;
    if (k !== 3) {
      throw new PfcError('E_IJB_META', `${path}:${line}: expected 3 space-separated fields, found ${k}`, { details: { file: path, line, fields: k, expected: 3 } });
    }
    if (n === cap) {
      cap *= 2;
      const a = new Int32Array(cap);
      a.set(t1);
      t1 = a;
      const b = new Int32Array(cap);
      b.set(t2);
      t2 = b;
      const l = new Uint8Array(cap);
      l.set(lab);
      lab = l;
    }
    t1[n] = fields[0]!;
    t2[n] = fields[1]!;
    if (fields[2] !== 0 && fields[2] !== 1) throw new PfcError('E_IJB_META', `${path}:${line}: label ${fields[2]} is not 0 or 1`, { details: { file: path, line } });
    lab[n] = fields[2]!;
    n++;
    lineStart = i;
  }
  return { t1: t1.slice(0, n), t2: t2.slice(0, n), label: lab.slice(0, n) };
}

/**
 * Reads `meta/<target>_face_tid_mid.txt`, `meta/<target>_template_pair_label.txt` and
 * `meta/<target>_name_5pts_score.txt` under `root`. The landmark file must list the same images in the same order
 * as the tid/mid file (the reference pairs them by position; here a mismatch is an error naming both lines).
 * @throws PfcError `E_NOT_FOUND` (missing file), `E_IJB_META` (wrong field count, bad number, mismatched names)
 */
export function readIjbProtocol(root: string, target: IjbTarget): IjbProtocol {
  assertArg(target === 'IJBB' || target === 'IJBC', 'readIjbProtocol', 'target', target, "'IJBB' or 'IJBC'");
  const p = ijbMetaPaths(root, target);
  const names: string[] = [];
  const tids: number[] = [];
  const mids: number[] = [];
  forEachLine(p.faces, 3, (f, line) => {
    names.push(f[0]!);
    tids.push(parseNum(f[1]!, p.faces, line, 'template id', true));
    mids.push(parseNum(f[2]!, p.faces, line, 'media id', true));
  });
  const landmarks = new Float64Array(names.length * 10);
  const faceness = new Float64Array(names.length);
  let k = 0;
  forEachLine(p.landmarks, 12, (f, line) => {
    if (k >= names.length) throw new PfcError('E_IJB_META', `${p.landmarks}:${line}: more landmark lines than images in ${p.faces} (${names.length})`, { details: { file: p.landmarks, line } });
    if (f[0] !== names[k]) {
      throw new PfcError('E_IJB_META', `${p.landmarks}:${line}: image ${JSON.stringify(f[0])} but line ${k + 1} of ${p.faces} is ${JSON.stringify(names[k])}; the two files must list the same images in the same order`, {
        details: { file: p.landmarks, line },
      });
    }
    for (let j = 0; j < 10; j++) landmarks[k * 10 + j] = parseNum(f[1 + j]!, p.landmarks, line, 'landmark coordinate', false);
    faceness[k] = parseNum(f[11]!, p.landmarks, line, 'faceness score', false);
    k++;
  });
  if (k !== names.length) throw new PfcError('E_IJB_META', `${p.landmarks}: ${k} landmark lines for ${names.length} images in ${p.faces}`, { details: { file: p.landmarks } });
  return { root, target, names, templates: Int32Array.from(tids), medias: Int32Array.from(mids), landmarks, faceness, pairs: readPairs(p.pairs) };
}

/** Options of {@link templateFeatures}: the reference's test mode. */
export interface IjbTestMode {
  /** F1: add the mirrored image's feature (reference true). */
  flip?: boolean;
  /** N1: keep each image feature's norm; false L2-normalises every image feature first (reference true). */
  normScore?: boolean;
  /** D1: multiply each image feature by its detector score (reference true). */
  detectorScore?: boolean;
}

/** The mode in the reference's words, e.g. `F1 N1 D1` (`F0`/`N0`/`D0` when off). */
export function ijbModeName(mode: IjbTestMode): string {
  return `F${mode.flip ?? true ? 1 : 0} N${mode.normScore ?? true ? 1 : 0} D${mode.detectorScore ?? true ? 1 : 0}`;
}

/**
 * Image features → L2-normalised template features, as `image2template_feature`: per template, group its images by
 * media; a media's feature is the mean of its images (the image itself when alone); the template's feature is the
 * sum of its media features, then L2-normalised (a zero vector stays zero).
 * @param feats [n, d] image features (already flip-fused, normalised and weighted per the test mode)
 * @param templates [n] template id per image
 * @param medias [n] media id per image
 * @param include optional [n] mask: images with 0 are left out (skipped missing images)
 * @returns unique template ids ascending and their [T, d] float32 features
 */
export function templateFeatures(feats: Float32Array | Float64Array, dim: number, templates: Int32Array, medias: Int32Array, include?: Uint8Array): { templateIds: Int32Array; features: Float32Array } {
  const n = templates.length;
  assertArg(feats.length === n * dim && medias.length === n, 'templateFeatures', 'feats.length', feats.length, `templates.length × dim = ${n * dim} with medias of the same length`);
  // sort images by (template, media) once: O(n log n) instead of the reference's O(T·n) scans
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => templates[a]! - templates[b]! || medias[a]! - medias[b]! || a - b);
  const ids: number[] = [];
  for (const i of order) if (ids.length === 0 || ids[ids.length - 1] !== templates[i]) ids.push(templates[i]!);
  const out = new Float32Array(ids.length * dim);
  const acc = new Float64Array(dim);
  const media = new Float64Array(dim);
  let t = -1;
  let i = 0;
  while (i < n) {
    const tid = templates[order[i]!]!;
    t++;
    acc.fill(0);
    while (i < n && templates[order[i]!] === tid) {
      const mid = medias[order[i]!]!;
      media.fill(0);
      let count = 0;
      while (i < n && templates[order[i]!] === tid && medias[order[i]!] === mid) {
        const r = order[i]!;
        if (!include || include[r]) {
          for (let k = 0; k < dim; k++) media[k]! += feats[r * dim + k]!;
          count++;
        }
        i++;
      }
      if (count > 0) for (let k = 0; k < dim; k++) acc[k]! += media[k]! / count;
    }
    let s = 0;
    for (let k = 0; k < dim; k++) s += acc[k]! * acc[k]!;
    const norm = Math.sqrt(s);
    for (let k = 0; k < dim; k++) out[t * dim + k] = norm > 0 ? acc[k]! / norm : 0;
  }
  return { templateIds: Int32Array.from(ids), features: out };
}

/**
 * Applies the test mode to raw image embeddings: F (sum with the mirror), N (L2-normalise each image when off),
 * D (multiply by the detector score).
 * @returns [n, d] float32 features (the reference's dtype; half the memory of float64 for IJB-C's 469k images)
 *   ready for {@link templateFeatures}
 */
export function imageFeatures(embeddings: Float32Array, dim: number, mode: IjbTestMode & { flipEmbeddings?: Float32Array; faceness?: Float64Array }): Float32Array {
  const n = embeddings.length / dim;
  const out = new Float32Array(embeddings.length);
  const flip = (mode.flip ?? true) && mode.flipEmbeddings;
  for (let r = 0; r < n; r++) {
    let s = 0;
    for (let k = 0; k < dim; k++) {
      const v = embeddings[r * dim + k]! + (flip ? mode.flipEmbeddings![r * dim + k]! : 0);
      s += v * v;
    }
    const scale = ((mode.normScore ?? true) ? 1 : 1 / Math.sqrt(s)) * ((mode.detectorScore ?? true) && mode.faceness ? mode.faceness[r]! : 1);
    for (let k = 0; k < dim; k++) out[r * dim + k] = (embeddings[r * dim + k]! + (flip ? mode.flipEmbeddings![r * dim + k]! : 0)) * scale;
  }
  return out;
}

/**
 * Cosine score of every pair from normalised template features: `score = ⟨f(t1), f(t2)⟩`. Uses a WebAssembly SIMD
 * kernel (float32 products, four f32x4 accumulators) when the runtime has it and `dim` is a multiple of 16, else a
 * JS loop accumulating in float64; the two agree to about 1e-6.
 * @param kernel `'auto'` (default) or `'js'` to force the JS loop
 * @throws PfcError `E_IJB_META` when a pair names a template without images
 */
export function pairScores(templateIds: Int32Array, features: Float32Array, dim: number, t1: Int32Array, t2: Int32Array, kernel: 'auto' | 'js' = 'auto'): Float32Array {
  assertArg(t1.length === t2.length, 'pairScores', 't2.length', t2.length, `equal to t1.length ${t1.length}`);
  // dense id → row table when ids are small non-negative integers (IJB ids are < 200k), else a Map
  let maxId = -1;
  let minId = 0;
  for (const t of templateIds) {
    if (t > maxId) maxId = t;
    if (t < minId) minId = t;
  }
  const dense = minId >= 0 && maxId < 1 << 24 ? new Int32Array(maxId + 1).fill(-1) : null;
  const index = new Map<number, number>();
  templateIds.forEach((t, i) => (dense ? (dense[t] = i) : index.set(t, i)));
  const n = t1.length;
  const rowsA = new Int32Array(n);
  const rowsB = new Int32Array(n);
  const row = (t: number, p: number): number => {
    const v = dense ? (t >= 0 && t <= maxId ? dense[t]! : -1) : index.get(t) ?? -1;
    if (v < 0) throw new PfcError('E_IJB_META', `pair ${p + 1} names template ${t}, which has no image in the tid/mid file`, { details: { pair: p, template: t } });
    return v;
  };
  for (let p = 0; p < n; p++) {
    rowsA[p] = row(t1[p]!, p);
    rowsB[p] = row(t2[p]!, p);
  }
  if (kernel === 'auto') {
    const order = cacheFriendlyOrder(rowsA, rowsB, templateIds.length);
    if (order === null) {
      const fast = wasmPairDots(features, dim, rowsA, rowsB);
      if (fast) return fast;
    } else {
      const fast = wasmPairDots(features, dim, gather(rowsA, order), gather(rowsB, order));
      if (fast) {
        const out = new Float32Array(n);
        for (let i = 0; i < n; i++) out[order[i]!] = fast[i]!;
        return out;
      }
    }
  }
  const out = new Float32Array(n);
  for (let p = 0; p < n; p++) {
    const oa = rowsA[p]! * dim;
    const ob = rowsB[p]! * dim;
    // four partial sums: independent dependency chains run about 3× faster than one
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    let k = 0;
    for (; k + 4 <= dim; k += 4) {
      s0 += features[oa + k]! * features[ob + k]!;
      s1 += features[oa + k + 1]! * features[ob + k + 1]!;
      s2 += features[oa + k + 2]! * features[ob + k + 2]!;
      s3 += features[oa + k + 3]! * features[ob + k + 3]!;
    }
    for (; k < dim; k++) s0 += features[oa + k]! * features[ob + k]!;
    out[p] = s0 + s1 + (s2 + s3);
  }
  return out;
}

function gather(a: Int32Array, order: Int32Array): Int32Array {
  const out = new Int32Array(order.length);
  for (let i = 0; i < order.length; i++) out[i] = a[order[i]!]!;
  return out;
}

/**
 * A pair order in which rows stay in cache: pairs grouped by blocks of 128 first rows (256 KiB of 512-d float32, an
 * L2 cache), and by second row within a block, so each second row is read once per block instead of once per pair
 * (IJB-C: ~4 GB of row reads instead of ~64 GB). Counting sort, O(pairs + blocks × rows); null when the problem
 * is small or the bucket table would be large.
 */
function cacheFriendlyOrder(rowsA: Int32Array, rowsB: Int32Array, rows: number): Int32Array | null {
  const n = rowsA.length;
  const B = 128;
  const buckets = Math.ceil(rows / B) * rows;
  if (n < 1 << 16 || buckets > 1 << 25) return null;
  const start = new Int32Array(buckets + 1);
  for (let p = 0; p < n; p++) start[((rowsA[p]! / B) | 0) * rows + rowsB[p]! + 1]!++;
  for (let k = 0; k < buckets; k++) start[k + 1]! += start[k]!;
  const order = new Int32Array(n);
  for (let p = 0; p < n; p++) order[start[((rowsA[p]! / B) | 0) * rows + rowsB[p]!]!++] = p;
  return order;
}

/** The TAR@FAR table of one method. */
export interface IjbTable {
  /** Row label as the reference prints it: `<job>-<TARGET>`. */
  method: string;
  mode: string;
  fars: number[];
  /** TAR strings with 2 decimals, in percent. */
  tar: string[];
  readings: TarAtFar[];
  auc: number;
}

/** Builds the TAR@FAR table of a score vector (reference reading: closest-FPR ROC point). */
export function ijbTable(scores: ArrayLike<number>, labels: ArrayLike<number>, method: string, mode: string, fars: readonly number[] = IJB_FARS): { table: IjbTable; roc: RocCurve } {
  const roc = rocCurve(scores, labels);
  const readings = tarAtFar(roc, fars);
  return { roc, table: { method, mode, fars: [...fars], tar: readings.map((r) => formatTar(r.tar)), readings, auc: auc(roc.fpr, roc.tpr) } };
}

/** Python's `str(float)` for the FAR headers (`1e-06`, `0.0001`, `0.1`). */
function pyFloatStr(v: number): string {
  if (v !== 0 && (Math.abs(v) < 1e-4 || Math.abs(v) >= 1e16)) {
    const [m, e] = v.toExponential().split('e');
    const exp = Number(e);
    return `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  return String(v);
}

/** PrettyTable's centring: odd excess goes right for odd-length text, left for even-length text. */
function center(text: string, width: number): string {
  const excess = width - text.length;
  if (excess % 2 === 0) return ' '.repeat(excess / 2) + text + ' '.repeat(excess / 2);
  const h = Math.floor(excess / 2);
  return text.length % 2 ? ' '.repeat(h) + text + ' '.repeat(h + 1) : ' '.repeat(h + 1) + text + ' '.repeat(h);
}

/** The reference's PrettyTable (`Methods | 1e-06 | … | 0.1`), one row per table. */
export function formatIjbTable(tables: readonly IjbTable[]): string {
  const header = ['Methods', ...(tables[0]?.fars ?? IJB_FARS).map(pyFloatStr)];
  const rows = tables.map((t) => [t.method, ...t.tar]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const rule = `+${widths.map((w) => '-'.repeat(w + 2)).join('+')}+`;
  const line = (cells: string[]) => `|${cells.map((c, i) => ` ${center(c, widths[i]!)} `).join('|')}|`;
  return [rule, line(header), rule, ...rows.map(line), rule].join('\n');
}

/** Markdown version of the table with the test mode and AUC columns. */
export function ijbTableMarkdown(tables: readonly IjbTable[]): string {
  const fars = (tables[0]?.fars ?? IJB_FARS).map(pyFloatStr);
  return [
    `| Methods | mode | ${fars.join(' | ')} | AUC % |`,
    `|---|---|${fars.map(() => '---:').join('|')}|---:|`,
    ...tables.map((t) => `| ${t.method} | ${t.mode} | ${t.tar.join(' | ')} | ${(t.auc * 100).toFixed(4)} |`),
  ].join('\n');
}

/**
 * The ROC curve as an SVG image laid out like the reference plot: log-scale FPR 1e-6…1e-1, TPR 0.3…1.0, grid,
 * legend `[method (AUC = xx.xxxx %)]`.
 */
export function rocSvg(curves: readonly { roc: RocCurve; label: string; auc: number }[], title = 'ROC on IJB'): string {
  const W = 640;
  const H = 480;
  const L = 70;
  const R = 20;
  const T = 40;
  const B = 60;
  const pw = W - L - R;
  const ph = H - T - B;
  const xs = (f: number) => L + ((Math.log10(Math.max(f, 1e-6)) + 6) / 5) * pw;
  const ys = (t: number) => T + (1 - (Math.min(Math.max(t, 0.3), 1) - 0.3) / 0.7) * ph;
  const colours = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
  ];
  for (let e = -6; e <= -1; e++) {
    const x = xs(10 ** e).toFixed(1);
    parts.push(`<line x1="${x}" y1="${T}" x2="${x}" y2="${T + ph}" stroke="#ccc" stroke-dasharray="3,3"/>`, `<text x="${x}" y="${T + ph + 18}" text-anchor="middle">1e${e}</text>`);
  }
  for (let k = 3; k <= 10; k++) {
    const y = ys(k / 10).toFixed(1);
    parts.push(`<line x1="${L}" y1="${y}" x2="${L + pw}" y2="${y}" stroke="#ccc" stroke-dasharray="3,3"/>`, `<text x="${L - 8}" y="${Number(y) + 4}" text-anchor="end">${(k / 10).toFixed(1)}</text>`);
  }
  parts.push(`<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="black"/>`);
  parts.push(`<text x="${L + pw / 2}" y="${H - 15}" text-anchor="middle">False Positive Rate</text>`);
  parts.push(`<text x="18" y="${T + ph / 2}" text-anchor="middle" transform="rotate(-90 18 ${T + ph / 2})">True Positive Rate</text>`);
  curves.forEach((c, ci) => {
    const pts: string[] = [];
    for (let i = 0; i < c.roc.fpr.length; i++) {
      const f = c.roc.fpr[i]!;
      if (!(f >= 1e-6) || f > 0.1 + 1e-12) continue;
      pts.push(`${xs(f).toFixed(2)},${ys(c.roc.tpr[i]!).toFixed(2)}`);
    }
    const col = colours[ci % colours.length]!;
    parts.push(`<polyline fill="none" stroke="${col}" stroke-width="1.5" points="${pts.join(' ')}"/>`);
    const ly = T + ph - 15 - 18 * (curves.length - 1 - ci);
    parts.push(`<line x1="${L + pw - 250}" y1="${ly}" x2="${L + pw - 225}" y2="${ly}" stroke="${col}" stroke-width="2"/>`, `<text x="${L + pw - 220}" y="${ly + 4}">${escapeXml(`[${c.label} (AUC = ${(c.auc * 100).toFixed(4)} %)]`)}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Options of {@link evaluateIjb}. */
export interface EvaluateIjbOptions extends IjbTestMode, EmbedImagesOptions, WarpOptions {
  /** Skip images that are missing (counted and reported) instead of failing. */
  skipMissing?: boolean;
  /** Directory for `<job>/<target>.npy` (scores), `.md`/`.json` (table) and `.svg` (ROC); nothing written if unset. */
  resultDir?: string;
  /** Job name (the table's method label; default 'pfc'). */
  job?: string;
  /** Decodes in flight (default 16). */
  concurrency?: number;
}

/** Result of {@link evaluateIjb}. */
export interface IjbResult {
  target: IjbTarget;
  table: IjbTable;
  /** The PrettyTable text and the mode line. */
  text: string;
  scores: Float32Array;
  labels: Uint8Array;
  roc: RocCurve;
  images: number;
  templates: number;
  pairs: number;
  /** Images that were missing and skipped (`skipMissing`). */
  skipped: string[];
  imagesPerSecond: number;
  /** Files written (when `resultDir`). */
  files: string[];
}

/**
 * IJB-B/IJB-C 1:1 verification with any embedder, as `eval_ijbc.py`: read the protocol, align every loose crop with
 * its five landmarks, embed it and its mirror, apply the test mode (F1 N1 D1 by default), pool media then
 * templates, score every pair by cosine, ROC, TAR@FAR 1e-6…1e-1.
 * @throws PfcError `E_IMAGE_MISSING` naming the image (unless `skipMissing`), the meta errors of {@link readIjbProtocol}
 */
export async function evaluateIjb(root: string, target: IjbTarget, embedder: Embedder, options: EvaluateIjbOptions = {}): Promise<IjbResult> {
  const proto = readIjbProtocol(root, target);
  const n = proto.names.length;
  const size = embedder.inputSize;
  const per = size * size * 3;
  const imgDir = ijbMetaPaths(root, target).images;
  const include = new Uint8Array(n).fill(1);
  const loadRange = async (start: number, end: number): Promise<Uint8Array> => {
    const out = new Uint8Array((end - start) * per);
    let next = start;
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= end) return;
        const path = join(imgDir, proto.names[i]!);
        let bytes: Buffer;
        try {
          bytes = readFileSync(path);
        } catch (cause) {
          if (options.skipMissing) {
            include[i] = 0;
            continue;
          }
          throw new PfcError('E_IMAGE_MISSING', `IJB image '${path}' (line ${i + 1} of the tid/mid file) cannot be read: ${(cause as Error).message}; pass skipMissing (--skip-missing) to skip missing images`, {
            cause,
            details: { file: path, index: i },
          });
        }
        const img = await decodeImage(bytes, path);
        const lm = Array.from({ length: 5 }, (_, j) => [proto.landmarks[i * 10 + 2 * j]!, proto.landmarks[i * 10 + 2 * j + 1]!]);
        out.set(alignFace(img, lm, { size, ...(options.mode ? { mode: options.mode } : {}) }).data, (i - start) * per);
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 16, end - start) }, worker));
    return out;
  };
  const flip = options.flip ?? true;
  const emb = await embedImages(embedder, loadRange, n, { progress: `${target} images`, ...options, flip });
  const skipped = proto.names.filter((_, i) => include[i] === 0); // in file order
  const feats = imageFeatures(emb.embeddings, emb.dim, { ...options, flip, ...(emb.flipEmbeddings ? { flipEmbeddings: emb.flipEmbeddings } : {}), faceness: proto.faceness });
  const { templateIds, features } = templateFeatures(feats, emb.dim, proto.templates, proto.medias, include);
  const scores = pairScores(templateIds, features, emb.dim, proto.pairs.t1, proto.pairs.t2);
  const job = options.job ?? 'pfc';
  const mode = ijbModeName({ ...options, flip });
  const { table, roc } = ijbTable(scores, proto.pairs.label, `${job}-${target}`, mode);
  const text = `${formatIjbTable([table])}\ntest mode: ${mode} (flip ${flip ? 'on' : 'off'}, norm ${options.normScore ?? true ? 'kept' : 'normalised'}, detector score ${options.detectorScore ?? true ? 'on' : 'off'})${skipped.length ? `; ${skipped.length} missing images skipped` : ''}`;
  const files: string[] = [];
  if (options.resultDir) files.push(...writeIjbResults(options.resultDir, job, target, scores, [{ table, roc }]));
  return { target, table, text, scores, labels: proto.pairs.label, roc, images: n, templates: templateIds.length, pairs: scores.length, skipped, imagesPerSecond: emb.imagesPerSecond, files };
}

/**
 * Writes `<dir>/<job>/<target lower>.npy` (scores, float32), `<target>.md` and `<target>.json` (table) and
 * `<target>.svg` (ROC).
 * @returns the paths written
 */
export function writeIjbResults(dir: string, job: string, target: IjbTarget, scores: Float32Array, results: readonly { table: IjbTable; roc: RocCurve }[]): string[] {
  const out = join(dir, job);
  mkdirSync(out, { recursive: true });
  const npy = join(out, `${target.toLowerCase()}.npy`);
  writeNpy(npy, scores);
  const tables = results.map((r) => r.table);
  const md = join(out, `${target}.md`);
  writeFileAtomic(md, Buffer.from(`# ${target} 1:1 TAR@FAR\n\n\`\`\`\n${formatIjbTable(tables)}\n\`\`\`\n\n${ijbTableMarkdown(tables)}\n`));
  const json = join(out, `${target}.json`);
  writeFileAtomic(json, Buffer.from(`${JSON.stringify({ target, tables: tables.map((t) => ({ method: t.method, mode: t.mode, fars: t.fars, tar: t.tar, tarFraction: t.readings.map((r) => r.tar), fprAtPoint: t.readings.map((r) => r.fprAtPoint), auc: t.auc })) }, null, 1)}\n`));
  const svg = join(out, `${target}.svg`);
  writeFileSync(svg, rocSvg(results.map((r) => ({ roc: r.roc, label: r.table.method, auc: r.table.auc })), `ROC on ${target}`));
  return [npy, md, json, svg];
}

/** One image of a synthetic IJB protocol. */
export interface IjbImageSpec {
  /** File name under `loose_crop/` (e.g. `1.jpg`). */
  name: string;
  /** Encoded image bytes (JPEG/PNG). */
  data: Uint8Array;
  template: number;
  media: number;
  /** [5][2] landmarks; default the ArcFace template (for images that are already aligned 112×112 crops). */
  landmarks?: ArrayLike<ArrayLike<number>>;
  /** Detector score (default 1). */
  score?: number;
}

/** A protocol to write, row form: one {@link IjbImageSpec} per image. */
export interface IjbProtocolSpec {
  images: readonly IjbImageSpec[];
  /** `[template1, template2, label]` triples (label 1 genuine, 0 impostor). */
  pairs: readonly (readonly [number, number, 0 | 1 | boolean])[];
}

/** A protocol to write, column form: parallel arrays, one entry per image. */
export interface IjbProtocolColumns {
  /** Encoded images (JPEG/PNG). */
  images: readonly Uint8Array[];
  templates: ArrayLike<number>;
  media: ArrayLike<number>;
  /** File names under `loose_crop/` (default `1.jpg`, `2.jpg`, … — or `.png` when the bytes are PNG). */
  names?: readonly string[];
  /** [n][5][2] landmarks (default the ArcFace template: images already aligned). */
  landmarks?: readonly ArrayLike<ArrayLike<number>>[];
  /** Detector scores (default 1). */
  scores?: ArrayLike<number>;
  pairs: readonly (readonly [number, number, 0 | 1 | boolean])[];
}

function rowsOf(spec: IjbProtocolSpec | IjbProtocolColumns): IjbProtocolSpec {
  if (!('templates' in spec)) return spec;
  const n = spec.images.length;
  assertArg(spec.templates.length === n && spec.media.length === n, 'writeIjbProtocol', 'templates.length', spec.templates.length, `images.length ${n} (and media.length ${spec.media.length} too)`);
  const images = spec.images.map((data, i): IjbImageSpec => {
    const png = data[0] === 0x89 && data[1] === 0x50;
    return {
      name: spec.names?.[i] ?? `${i + 1}.${png ? 'png' : 'jpg'}`,
      data,
      template: spec.templates[i]!,
      media: spec.media[i]!,
      ...(spec.landmarks?.[i] ? { landmarks: spec.landmarks[i] } : {}),
      ...(spec.scores ? { score: spec.scores[i]! } : {}),
    };
  });
  return { images, pairs: spec.pairs };
}

/**
 * Writes an IJB-format protocol under `root`: `meta/<target>_face_tid_mid.txt`, `meta/<target>_name_5pts_score.txt`,
 * `meta/<target>_template_pair_label.txt` and the images in `loose_crop/` — for held-out synthetic identities
 * (trainer) and tests. Accepts one record per image ({@link IjbProtocolSpec}) or parallel columns
 * ({@link IjbProtocolColumns}: `{ images, templates, media, landmarks?, scores?, pairs }`).
 */
export function writeIjbProtocol(root: string, target: IjbTarget, protocol: IjbProtocolSpec | IjbProtocolColumns): void {
  const spec = rowsOf(protocol);
  const meta = join(root, 'meta');
  const crops = join(root, 'loose_crop');
  mkdirSync(meta, { recursive: true });
  mkdirSync(crops, { recursive: true });
  const t = target.toLowerCase();
  const faces: string[] = [];
  const lms: string[] = [];
  for (const img of spec.images) {
    assertArg(/^[^\s]+$/.test(img.name), 'writeIjbProtocol', 'images[].name', img.name, 'a file name without whitespace');
    const lm = img.landmarks ?? ARCFACE_TEMPLATE_DECIMAL;
    assertArg(lm.length === 5, 'writeIjbProtocol', `landmarks of ${img.name}`, lm.length, '5 points');
    faces.push(`${img.name} ${img.template} ${img.media}`);
    lms.push(`${img.name} ${Array.from(lm, (p) => `${p[0]!} ${p[1]!}`).join(' ')} ${img.score ?? 1}`);
    writeFileSync(join(crops, img.name), img.data);
  }
  writeFileSync(join(meta, `${t}_face_tid_mid.txt`), `${faces.join('\n')}\n`);
  writeFileSync(join(meta, `${t}_name_5pts_score.txt`), `${lms.join('\n')}\n`);
  writeFileSync(join(meta, `${t}_template_pair_label.txt`), `${spec.pairs.map(([a, b, l]) => `${a} ${b} ${l === true || l === 1 ? 1 : 0}`).join('\n')}\n`);
}
