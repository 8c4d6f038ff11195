import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PfcError, assertArg, writeFileAtomic } from '@pfc/core';
import type { Progress } from '@pfc/core';
import { FolderFaceDataset, RecordFaceDataset } from './dataset';
import type { RecordLayout } from './dataset';
import { decodeImage, encodeJpeg, sniffImageFormat } from './image';
import type { DecoderName } from './image';
import { classOf, describe, packRecord, unpackRecord } from './irheader';
import { RECORDIO_MAGIC, RecordIOReader, RecordIOWriter, formatIdx, idxPathFor } from './recordio';
import { synthIdentityImage, synthIdentitySeed } from './synth';
import type { SynthOptions } from './synth';

/** Summary of a written `.rec`. */
export interface PackResult {
  rec: string;
  idx: string;
  images: number;
  identities: number;
  /** Identities with no image (empty identity records; e.g. an empty sub-folder in `packFolder`). */
  emptyIdentities: number;
  bytes: number;
}

/**
 * Writes the InsightFace layout from labelled images: image records with keys 1…N (flag 0, scalar label, id = key),
 * one identity record per class (flag 2, label [first key, end key]), and the header record key 0 (flag 2, label
 * [N+1, N+1+C], id2 = 1) written last, as the fixture's RecBuilder does. Images of a class must be contiguous and
 * classes ascending; a class with no image (a label skipped, or below `close(numClasses)`) gets an empty identity
 * record [k, k], so class ids keep their meaning (as an empty folder keeps its index in an ImageFolder).
 */
export class FaceRecWriter {
  private readonly writer: RecordIOWriter;
  private key = 1;
  private readonly ranges: Array<[number, number]> = [];
  private lastLabel = -1;
  private empty = 0;

  /**
   * @param prefix writes `<prefix>.rec` and `<prefix>.idx` (the folder is created if missing). Records go to
   * `<prefix>.rec.partial` and `<prefix>.idx.partial`, renamed by `close()`: until then an existing `.rec/.idx`
   * stays as it was, and `abort()` removes the partial files.
   */
  constructor(readonly prefix: string) {
    mkdirSync(dirname(prefix), { recursive: true });
    this.writer = new RecordIOWriter(`${prefix}.rec.partial`, `${prefix}.idx.partial`);
  }

  /** Stops writing and removes the partial files; the prefix's existing `.rec/.idx`, if any, are untouched. */
  abort(): void {
    this.writer.close();
    rmSync(`${this.prefix}.rec.partial`, { force: true });
    rmSync(`${this.prefix}.idx.partial`, { force: true });
  }

  /**
   * Appends one image of class `label` (classes ascending, each contiguous; skipped classes are empty).
   * @throws PfcError `E_LABEL_ORDER` when a class comes after a higher one or again after another class
   */
  add(label: number, image: Uint8Array): number {
    if (label !== this.lastLabel) {
      if (!Number.isInteger(label) || label < this.ranges.length) {
        throw new PfcError('E_LABEL_ORDER', `FaceRecWriter: class ${label} follows class ${this.lastLabel}; classes must come in ascending order, each contiguous`, {
          details: { label, previous: this.lastLabel },
        });
      }
      this.padEmpty(label);
      this.ranges.push([this.key, this.key]);
      this.lastLabel = label;
    }
    const k = this.key++;
    this.writer.write(k, packRecord({ label, id: k }, image));
    this.ranges[this.ranges.length - 1]![1] = this.key;
    return k;
  }

  /** Empty identity ranges for the classes below `label` that have none yet. */
  private padEmpty(label: number): void {
    while (this.ranges.length < label) {
      this.ranges.push([this.key, this.key]);
      this.empty++;
    }
  }

  /**
   * Writes the identity and header records, closes the files.
   * @param numClasses total classes (default: the highest label + 1); classes above the last label are empty
   */
  close(numClasses?: number): PackResult {
    if (numClasses !== undefined) {
      assertArg(Number.isInteger(numClasses) && numClasses >= this.ranges.length, 'FaceRecWriter.close', 'numClasses', numClasses, `an integer >= ${this.ranges.length} (the classes written)`);
      this.padEmpty(numClasses);
    }
    const a = this.key;
    this.ranges.forEach(([s, e], i) => this.writer.write(a + i, packRecord({ label: [s, e], id: a + i })));
    const b = a + this.ranges.length;
    this.writer.write(0, packRecord({ label: [a, b], id: 0, id2: 1 }));
    const bytes = this.writer.offset;
    this.writer.close();
    renameSync(`${this.prefix}.rec.partial`, `${this.prefix}.rec`);
    renameSync(`${this.prefix}.idx.partial`, `${this.prefix}.idx`);
    return { rec: `${this.prefix}.rec`, idx: `${this.prefix}.idx`, images: a - 1, identities: this.ranges.length, emptyIdentities: this.empty, bytes };
  }
}

export interface PackOptions {
  /** Progress output (default none). */
  progress?: Progress | null;
  /** Check every image decodes before packing it (default true). */
  check?: boolean;
}

/**
 * `im2rec` for face folders: packs `<folder>/<identity>/<image>` (classes = sorted sub-folders) into
 * `<prefix>.rec/.idx` with the InsightFace header record, image bytes copied unchanged, and a `property` file. An
 * empty sub-folder keeps its class id as an identity with no image (`emptyIdentities` counts them).
 * @throws PfcError `E_IMAGE_DECODE` naming the file when `check` and an image does not decode; nothing is written then
 */
export async function packFolder(folder: string, prefix: string, options: PackOptions = {}): Promise<PackResult> {
  const ds = new FolderFaceDataset(folder);
  const progress = options.progress ?? null;
  const w = new FaceRecWriter(prefix);
  let size: [number, number] | null = null;
  try {
    for (let i = 0; i < ds.length; i++) {
      const s = ds.read(i);
      if (options.check ?? true) {
        const img = await decodeImage(s.image, s.where);
        size ??= [img.height, img.width];
      }
      w.add(s.label, s.image);
      progress?.tick();
    }
  } catch (err) {
    w.abort();
    throw err;
  } finally {
    progress?.stop();
  }
  const res = w.close(ds.numClasses);
  writeProperty(prefix, ds.numClasses, size ?? [112, 112]);
  return res;
}

/**
 * `num_classes,h,w\n` as InsightFace's `property`: `<dir>/property` for a `train` prefix, else `<prefix>_property`.
 * The newline is there because the fixture's RecBuilder writes one, so a pack of its images reproduces every file.
 */
function writeProperty(prefix: string, numClasses: number, [h, w]: [number, number]): void {
  const p = basename(prefix) === 'train' ? join(dirname(prefix), 'property') : `${prefix}_property`;
  writeFileAtomic(p, Buffer.from(`${numClasses},${h},${w}\n`));
}

export interface SynthRecOptions extends SynthOptions {
  identities: number;
  perIdentity: number;
  /** Dataset seed (default 0): identity i is `synthIdentitySeed(seed, i)`. */
  seed?: number;
  /** JPEG quality (default 95). */
  quality?: number;
  progress?: Progress | null;
}

/**
 * Writes a learnable synthetic face set: `identities` classes, `perIdentity` jittered views each, as a real
 * `.rec/.idx` with the InsightFace header record, plus `property`. Identity i of seed s renders as
 * `synthIdentityImage(synthIdentitySeed(s, i), j)`; identities ≥ `identities` of the same seed are never in the set,
 * so they make held-out verification data.
 */
export async function writeSynthRec(prefix: string, options: SynthRecOptions): Promise<PackResult> {
  const { identities, perIdentity } = options;
  assertArg(Number.isInteger(identities) && identities > 0, 'writeSynthRec', 'identities', identities, 'a positive integer');
  assertArg(Number.isInteger(perIdentity) && perIdentity > 0, 'writeSynthRec', 'perIdentity', perIdentity, 'a positive integer');
  const progress = options.progress ?? null;
  const w = new FaceRecWriter(prefix);
  const seed = options.seed ?? 0;
  const size = options.size ?? 112;
  try {
    for (let c = 0; c < identities; c++) {
      const idSeed = synthIdentitySeed(seed, c);
      // encode a class's images concurrently (libvips threads), write them in order
      const jpegs = await Promise.all(
        Array.from({ length: perIdentity }, (_, j) => encodeJpeg(synthIdentityImage(idSeed, j, options), options.quality ?? 95)),
      );
      for (const j of jpegs) w.add(c, j);
      progress?.tick(perIdentity);
    }
  } catch (err) {
    w.abort();
    throw err;
  } finally {
    progress?.stop();
  }
  const res = w.close();
  writeProperty(prefix, identities, [size, size]);
  return res;
}

/**
 * Writes every image of a `.rec` to `<folder>/<class>/<key>.<ext>` (bytes unchanged), like
 * `unpack_glint360k.py`. Returns the number of images.
 */
export function unpackRec(rec: string, folder: string, progress: Progress | null = null): number {
  const ds = new RecordFaceDataset(rec, { labelArray: 'first' });
  try {
    mkdirSync(folder, { recursive: true });
    const made = new Set<number>();
    for (let i = 0; i < ds.length; i++) {
      const s = ds.read(i);
      if (!made.has(s.label)) {
        mkdirSync(join(folder, String(s.label)), { recursive: true });
        made.add(s.label);
      }
      const ext = sniffImageFormat(s.image) === 'png' ? 'png' : 'jpg';
      writeFileSync(join(folder, String(s.label), `${s.key}.${ext}`), s.image);
      progress?.tick();
    }
    return ds.length;
  } finally {
    progress?.stop();
    ds.close();
  }
}

/** What `inspect` reports. */
export interface RecInspection {
  rec: string;
  indexed: boolean;
  layout: RecordLayout;
  records: number;
  images: number;
  /** Classes from the header / property (null when neither) and classes seen in image labels. */
  numClasses: number | null;
  classesSeen: number;
  identityRecords: number;
  /** Images per identity: min, max, mean, and a histogram `{ "<lo>-<hi>": count }` over power-of-two bins. */
  imagesPerIdentity: { min: number; max: number; mean: number; histogram: Record<string, number> };
  /** First image's encoded format and decoded size (null if it did not decode). */
  firstImage: { format: string; width: number; height: number } | null;
}

/** Reads every image record's header (not the pixels) and summarises the set. */
export async function inspectRec(rec: string): Promise<RecInspection> {
  const ds = new RecordFaceDataset(rec, { labelArray: 'first' });
  try {
    const counts = new Map<number, number>();
    for (let i = 0; i < ds.length; i++) {
      const key = ds.keyAt(i);
      const offset = ds.reader.offsetOf(key);
      const { header } = unpackRecord(ds.reader.read(key), { file: ds.source, key, offset });
      const c = classOf(header, { file: ds.source, key, offset });
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    const per = [...counts.values()];
    const histogram: Record<string, number> = {};
    for (const n of per) {
      const lo = 2 ** Math.floor(Math.log2(n));
      const k = lo === 1 ? '1' : `${lo}-${2 * lo - 1}`;
      histogram[k] = (histogram[k] ?? 0) + 1;
    }
    const sorted = Object.fromEntries(Object.entries(histogram).sort((a, b) => parseInt(a[0]) - parseInt(b[0])));
    let firstImage: RecInspection['firstImage'] = null;
    if (ds.length > 0) {
      try {
        const s = ds.read(0);
        const img = await decodeImage(s.image, s.where);
        firstImage = { format: sniffImageFormat(s.image), width: img.width, height: img.height };
      } catch {
        firstImage = null;
      }
    }
    return {
      rec: ds.source,
      indexed: ds.reader.indexed,
      layout: ds.layout,
      records: ds.reader.length,
      images: ds.length,
      numClasses: ds.numClasses,
      classesSeen: counts.size,
      identityRecords: ds.headerRange ? ds.headerRange[1] - ds.headerRange[0] : 0,
      imagesPerIdentity: {
        min: per.length ? Math.min(...per) : 0,
        max: per.length ? Math.max(...per) : 0,
        mean: per.length ? per.reduce((a, b) => a + b, 0) / per.length : 0,
        histogram: sorted,
      },
      firstImage,
    };
  } finally {
    ds.close();
  }
}

/** One problem `verify` found. */
export interface VerifyProblem {
  key: number | null;
  offset: number;
  code: string;
  message: string;
}

export interface VerifyReport {
  rec: string;
  records: number;
  images: number;
  problems: VerifyProblem[];
}

export interface VerifyOptions {
  /** Expected image size [h, w]; default: any size. */
  imageSize?: readonly [number, number];
  decoder?: DecoderName;
  progress?: Progress | null;
  /** Labels must be scalars (default: only for the im2rec layout). */
  labelArray?: 'first' | 'error';
}

/**
 * Reads every record of a `.rec` (through its `.idx` when there is one, and by scanning the file either way) and
 * decodes every image; returns every problem by key and byte offset instead of stopping at the first.
 */
export async function verifyRec(rec: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const add = (key: number | null, offset: number, e: unknown) => {
    if (e instanceof PfcError) problems.push({ key, offset: typeof e.details.offset === 'number' ? e.details.offset : offset, code: e.code, message: e.message });
    else throw e;
  };
  // 1. the physical file, independent of the index: resynchronise on the next magic word after damage
  const scanned = scanWithResync(rec, problems);
  // 2. the index and every image through it
  let reader: RecordIOReader;
  try {
    reader = new RecordIOReader(rec, existsSync(idxPathFor(rec)) ? { badIndex: 'drop' } : { idx: null });
  } catch (e) {
    add(null, 0, e);
    return { rec, records: scanned, images: 0, problems: uniqueProblems(problems) };
  }
  for (const e of reader.badIndexEntries) add(e.details.key as number, e.details.offset as number, e);
  let layout: RecordLayout = 'im2rec';
  let imageKeys: Set<number> | null = null;
  let numClasses: number | null = null;
  try {
    if (reader.has(0)) {
      const h = unpackRecord(reader.read(0), { file: rec, key: 0, offset: reader.offsetOf(0) }).header;
      if (h.flag > 0 && h.labels && h.labels.length >= 2) {
        layout = 'insightface-header';
        imageKeys = new Set(reader.keys.filter((k) => k >= 1 && k < h.labels![0]!));
        numClasses = h.labels[1]! - h.labels[0]!;
      }
    }
  } catch (e) {
    add(0, reader.has(0) ? reader.offsetOf(0) : 0, e);
  }
  const requireScalar = (options.labelArray ?? (layout === 'im2rec' ? 'error' : 'first')) === 'error';
  const progress = options.progress ?? null;
  let images = 0;
  try {
    for (const key of reader.keys) {
      const offset = reader.offsetOf(key);
      const loc = { file: rec, key, offset };
      try {
        const payload = reader.read(key);
        if (imageKeys && !imageKeys.has(key)) {
          unpackRecord(payload, loc);
          continue;
        }
        const { header, image } = unpackRecord(payload, loc);
        const label = classOf(header, loc, requireScalar);
        if (numClasses !== null && label >= numClasses) {
          throw new PfcError('E_LABEL_RANGE', `verify: ${describe(loc)}: class ${label} is not below the ${numClasses} classes of the header record`, {
            details: { ...loc, label, numClasses },
          });
        }
        images++;
        const img = await decodeImage(image, describe(loc), options.decoder);
        if (options.imageSize && (img.height !== options.imageSize[0] || img.width !== options.imageSize[1])) {
          throw new PfcError('E_IMAGE_SIZE', `verify: ${describe(loc)}: image is ${img.width}x${img.height}, expected ${options.imageSize[1]}x${options.imageSize[0]}`, {
            details: loc,
          });
        }
      } catch (e) {
        add(key, offset, e);
      }
      progress?.tick();
    }
  } finally {
    progress?.stop();
    reader.close();
  }
  return { rec, records: scanned, images, problems: uniqueProblems(problems) };
}

/**
 * A problem both passes report (same code at the same offset: damage, or a file neither could open) is listed once,
 * with its key when the index pass knew it; the list is in file order.
 */
function uniqueProblems(problems: VerifyProblem[]): VerifyProblem[] {
  const seen = new Set<string>();
  const keyedFirst = [...problems].sort((a, b) => (a.key === null ? 1 : 0) - (b.key === null ? 1 : 0));
  const unique = keyedFirst.filter((p) => {
    const k = `${p.code}@${p.offset}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  return unique.sort((a, b) => a.offset - b.offset);
}

/** Scans a `.rec` physically, collecting damage and resynchronising at the next aligned magic word. Returns records found. */
function scanWithResync(rec: string, problems: VerifyProblem[]): number {
  let fd: number;
  try {
    fd = openSync(rec, 'r');
  } catch (e) {
    problems.push({ key: null, offset: 0, code: 'E_RECORDIO_OPEN', message: `verify: cannot open ${rec}: ${(e as Error).message}` });
    return 0;
  }
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.allocUnsafe(size);
    readSync(fd, buf, 0, size, 0);
    let pos = 0;
    let count = 0;
    while (pos < size) {
      const start = pos;
      const err = physicalRecordEnd(buf, pos);
      if (typeof err === 'number') {
        pos = err;
        count++;
        continue;
      }
      problems.push({ key: null, offset: start, code: err.code, message: `${rec}: ${err.message} at byte offset ${start}` });
      // resync: next 4-aligned magic word with cflag 0 or 1 after `start`
      pos = start + 4;
      while (pos + 8 <= size && !(buf.readUInt32LE(pos) === RECORDIO_MAGIC && (buf.readUInt32LE(pos + 4) >>> 29) <= 1)) pos += 4;
      if (pos + 8 > size) break;
    }
    return count;
  } finally {
    closeSync(fd);
  }
}

function physicalRecordEnd(buf: Buffer, pos: number): number | { code: string; message: string } {
  let first = true;
  for (;;) {
    if (pos + 8 > buf.length) return { code: 'E_RECORDIO_TRUNCATED', message: 'file ends inside a record header' };
    if (buf.readUInt32LE(pos) !== RECORDIO_MAGIC) return { code: 'E_RECORDIO_MAGIC', message: `expected magic 0xced7230a, got 0x${buf.readUInt32LE(pos).toString(16)}` };
    const l = buf.readUInt32LE(pos + 4);
    const cflag = l >>> 29;
    const len = l & (2 ** 29 - 1);
    if (first ? cflag > 1 : cflag < 2 || cflag > 3) return { code: 'E_RECORDIO_CFLAG', message: `unexpected cflag ${cflag}` };
    const next = pos + 8 + ((len + 3) & ~3);
    if (next > buf.length) return { code: 'E_RECORDIO_TRUNCATED', message: `record of ${len} bytes runs past the end of the file (size ${buf.length})` };
    pos = next;
    first = false;
    if (cflag === 0 || cflag === 3) return pos;
  }
}

/**
 * Rebuilds a lost `.idx` by scanning the `.rec` (keys = IRHeader ids, as im2rec and InsightFace write them).
 * @throws PfcError for the first damaged record (the `.idx` is then not written)
 */
export function rebuildIndex(rec: string, idx = idxPathFor(rec)): { idx: string; records: number } {
  const reader = new RecordIOReader(rec, { idx: null });
  const entries = reader.keys.map((k) => [k, reader.offsetOf(k)] as const);
  reader.close();
  writeFileAtomic(idx, Buffer.from(formatIdx(entries)));
  return { idx, records: entries.length };
}
