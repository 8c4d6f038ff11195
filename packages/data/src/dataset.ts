import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { PfcError } from '@pfc/core';
import { RecordIOReader, idxPathFor } from './recordio';
import { classOf, describe, unpackRecord } from './irheader';

/** One sample's encoded image and class, as read from a dataset (before decoding). */
export interface EncodedSample {
  /** Record key (RecordIO) or relative path (folder). */
  key: number | string;
  /** Class id 0…C−1. */
  label: number;
  /** Encoded image bytes (JPEG/PNG). */
  image: Uint8Array;
  /** `file key K at byte offset O` (or the image path), for error messages. */
  where: string;
}

/**
 * A face-recognition training set: `length` samples, each an encoded image and a class in 0…numClasses−1.
 * Reading is synchronous and cheap (a `pread` or a file read); decoding happens in the loader.
 */
export interface FaceDataset {
  readonly length: number;
  /** Number of classes when known without reading every sample (header record, `property` file, folder count). */
  readonly numClasses: number | null;
  /** What was opened, for logs. */
  readonly source: string;
  /** The key of sample `i` (0 ≤ i < length) without reading it. */
  keyAt(i: number): number | string;
  /** Reads sample `i`. @throws PfcError for a damaged record or label */
  read(i: number): EncodedSample;
  close(): void;
}

/** Which RecordIO layout was found: InsightFace's header record 0, or plain im2rec (every key is an image). */
export type RecordLayout = 'insightface-header' | 'im2rec';

/** One identity's image key range `[start, end)` from an InsightFace identity record. */
export interface IdentityRange {
  /** The identity record's key. */
  key: number;
  start: number;
  end: number;
}

export interface RecordFaceDatasetOptions {
  /** `.idx` path (default beside the `.rec`); `null` to scan the `.rec`. */
  idx?: string | null;
  /**
   * What to do with an image record whose label is a vector: `'first'` takes `labels[0]` (MXFaceDataset);
   * `'error'` throws `E_LABEL_SCALAR`. Default `'first'` for the InsightFace layout, `'error'` for plain im2rec
   * (where a vector label usually means the wrong file, e.g. a detection set packed with `--pack-label`).
   */
  labelArray?: 'first' | 'error';
}

/**
 * A `.rec/.idx` pair as `MXFaceDataset` reads it (spec §4.4–4.5): if record 0 has flag > 0 it is InsightFace's header
 * (label [a, b]: images are keys 1…a−1, identity records a…b−1); otherwise every key in the `.idx` is an image.
 */
export class RecordFaceDataset implements FaceDataset {
  readonly reader: RecordIOReader;
  readonly layout: RecordLayout;
  /** Image keys in the order samples are numbered. */
  readonly imageKeys: readonly number[];
  /** Header label [a, b] (InsightFace layout), else null. */
  readonly headerRange: readonly [number, number] | null;
  readonly numClasses: number | null;
  readonly source: string;
  private readonly labelArray: 'first' | 'error';

  /**
   * @param path the `.rec` file, or a folder holding `train.rec`/`train.idx`
   * @throws PfcError `E_RECORDIO_*` for an unreadable file, `E_RECORDIO_LAYOUT` for a header record whose key range
   *   does not fit the `.idx`
   */
  constructor(path: string, options: RecordFaceDatasetOptions = {}) {
    const rec = existsSync(path) && statSync(path).isDirectory() ? join(path, 'train.rec') : path;
    this.source = rec;
    this.reader = new RecordIOReader(rec, options.idx === undefined ? {} : { idx: options.idx });
    let header: { flag: number; labels: Float32Array | null } | null = null;
    if (this.reader.has(0)) {
      const off = this.reader.offsetOf(0);
      header = unpackRecord(this.reader.read(0), { file: rec, key: 0, offset: off }).header;
    }
    if (header && header.flag > 0 && header.labels && header.labels.length >= 2) {
      const a = header.labels[0]!;
      const b = header.labels[1]!;
      if (!(Number.isInteger(a) && Number.isInteger(b) && a >= 1 && b >= a)) {
        throw new PfcError('E_RECORDIO_LAYOUT', `RecordFaceDataset: ${rec} key 0: header label must be [a, b] with 1 ≤ a ≤ b, got [${a}, ${b}]`, {
          details: { file: rec, key: 0, a, b },
        });
      }
      const keys: number[] = [];
      for (let k = 1; k < a; k++) {
        if (!this.reader.has(k)) {
          throw new PfcError('E_RECORDIO_LAYOUT', `RecordFaceDataset: ${rec}: header says images are keys 1…${a - 1} but key ${k} is not in the index`, {
            details: { file: rec, key: k, a, b },
          });
        }
        keys.push(k);
      }
      this.layout = 'insightface-header';
      this.imageKeys = keys;
      this.headerRange = [a, b];
      this.numClasses = b - a;
    } else {
      this.layout = 'im2rec';
      this.imageKeys = this.reader.keys;
      this.headerRange = null;
      this.numClasses = readProperty(rec);
    }
    this.labelArray = options.labelArray ?? (this.layout === 'im2rec' ? 'error' : 'first');
  }

  get length(): number {
    return this.imageKeys.length;
  }

  keyAt(i: number): number {
    const k = this.imageKeys[i];
    if (k === undefined) throw new PfcError('E_ARGUMENT', `RecordFaceDataset.keyAt: index ${i} out of range [0, ${this.length})`);
    return k;
  }

  read(i: number): EncodedSample {
    const key = this.keyAt(i);
    const offset = this.reader.offsetOf(key);
    const loc = { file: this.source, key, offset };
    const { header, image } = unpackRecord(this.reader.read(key), loc);
    const label = classOf(header, loc, this.labelArray === 'error');
    if (this.numClasses !== null && label >= this.numClasses) {
      throw new PfcError('E_LABEL_RANGE', `RecordFaceDataset: ${describe(loc)}: class ${label} is not below the ${this.numClasses} classes of the header`, {
        details: { ...loc, label, numClasses: this.numClasses },
      });
    }
    return { key, label, image, where: describe(loc) };
  }

  /** The identity records `a…b−1` (InsightFace layout), or null for im2rec. */
  identities(): IdentityRange[] | null {
    if (!this.headerRange) return null;
    const [a, b] = this.headerRange;
    const out: IdentityRange[] = [];
    for (let k = a; k < b; k++) {
      const offset = this.reader.offsetOf(k);
      const { header } = unpackRecord(this.reader.read(k), { file: this.source, key: k, offset });
      const l = header.labels;
      if (!l || l.length < 2) {
        throw new PfcError('E_RECORDIO_LAYOUT', `RecordFaceDataset: ${describe({ file: this.source, key: k, offset })}: identity record needs label [start, end], got flag ${header.flag}`, {
          details: { file: this.source, key: k, offset },
        });
      }
      out.push({ key: k, start: l[0]!, end: l[1]! });
    }
    return out;
  }

  close(): void {
    this.reader.close();
  }
}

/** `num_classes` from the `property` file (`C,H,W`) beside a `.rec`, if present. */
function readProperty(rec: string): number | null {
  const dir = dirname(rec);
  const stem = basename(rec, '.rec');
  for (const p of [join(dir, 'property'), join(dir, `${stem}_property`), join(dir, `${stem}.property`)]) {
    if (existsSync(p)) {
      const n = Number(readFileSync(p, 'utf8').split(',')[0]);
      if (Number.isInteger(n) && n > 0) return n;
    }
  }
  return null;
}

/** Image file extensions the folder dataset picks up. */
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png'] as const;

/**
 * An image folder with one sub-folder per identity, as torchvision's `ImageFolder`: class = index of the sub-folder
 * in sorted order, files sorted within each.
 */
export class FolderFaceDataset implements FaceDataset {
  readonly root: string;
  /** Sub-folder names, index = class. */
  readonly classes: readonly string[];
  /** Relative paths (`<class>/<file>`) of every sample. */
  readonly files: readonly string[];
  readonly labels: Int32Array;
  readonly source: string;

  /** @throws PfcError `E_DATASET_EMPTY` when there is no image */
  constructor(root: string) {
    this.root = root;
    this.source = root;
    if (!existsSync(root) || !statSync(root).isDirectory()) {
      throw new PfcError('E_DATASET_OPEN', `FolderFaceDataset: ${root} is not a folder`, { details: { file: root } });
    }
    const classes = readdirSync(root, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
    const files: string[] = [];
    const labels: number[] = [];
    for (let ci = 0; ci < classes.length; ci++) {
      const c = classes[ci]!;
      const imgs = readdirSync(join(root, c))
        .filter((f) => (IMAGE_EXTENSIONS as readonly string[]).includes(extname(f).toLowerCase()))
        .sort();
      // Every sub-folder keeps its sorted index as class id, so ids match ImageFolder even when a folder is empty.
      for (const f of imgs) {
        files.push(`${c}/${f}`);
        labels.push(ci);
      }
    }
    if (files.length === 0) {
      throw new PfcError('E_DATASET_EMPTY', `FolderFaceDataset: ${root} has no ${IMAGE_EXTENSIONS.join('/')} images in sub-folders`, { details: { file: root } });
    }
    this.classes = classes;
    this.files = files;
    this.labels = Int32Array.from(labels);
  }

  get length(): number {
    return this.files.length;
  }

  get numClasses(): number {
    return this.classes.length;
  }

  keyAt(i: number): string {
    const f = this.files[i];
    if (f === undefined) throw new PfcError('E_ARGUMENT', `FolderFaceDataset.keyAt: index ${i} out of range [0, ${this.length})`);
    return f;
  }

  read(i: number): EncodedSample {
    const key = this.keyAt(i);
    const path = join(this.root, key);
    let image: Buffer;
    try {
      image = readFileSync(path);
    } catch (cause) {
      throw new PfcError('E_DATASET_READ', `FolderFaceDataset: cannot read ${path}: ${(cause as Error).message}`, { cause, details: { file: path } });
    }
    return { key, label: this.labels[i]!, image, where: path };
  }

  close(): void {}
}

/**
 * Opens a training set the way `get_dataloader` picks one (spec §4.6): a `.rec` file, a folder with
 * `train.rec` + `train.idx`, or else an image folder.
 */
export function openFaceDataset(path: string, options: RecordFaceDatasetOptions = {}): FaceDataset {
  if (path.endsWith('.rec')) return new RecordFaceDataset(path, options);
  if (existsSync(join(path, 'train.rec')) && existsSync(idxPathFor(join(path, 'train.rec')))) return new RecordFaceDataset(path, options);
  return new FolderFaceDataset(path);
}
