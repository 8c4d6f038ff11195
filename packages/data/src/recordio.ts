import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { PfcError, assertArg, writeFileAtomic } from '@pfc/core';

/** The RecordIO magic word, 0xCED7230A (bytes `0A 23 D7 CE` on disk). */
export const RECORDIO_MAGIC = 0xced7230a;
/** Largest payload one physical record can hold (the length field is 29 bits). */
export const RECORDIO_MAX_LENGTH = 2 ** 29 - 1;

const MAGIC_BYTES = Buffer.from([0x0a, 0x23, 0xd7, 0xce]);
const LENGTH_MASK = RECORDIO_MAX_LENGTH;

/** `lrecord = cflag << 29 | length` (dmlc `EncodeLRec`). */
function encodeLRec(cflag: number, length: number): number {
  return ((cflag << 29) | length) >>> 0;
}

const ceil4 = (n: number): number => (n + 3) & ~3;

/**
 * Encodes one logical record the way dmlc-core `RecordIOWriter::WriteRecord` does: magic, lrecord, payload, zero
 * padding to 4 bytes. When the payload holds the magic word at a 4-byte aligned offset the record is split there
 * into parts with cflag 1 (first), 2 (middle), 3 (last), and the magic bytes themselves are dropped (the reader
 * puts them back between parts).
 * @param payload the logical record's bytes (any length below 2^29)
 * @returns the physical bytes to append to a `.rec`, and how many parts they hold
 */
export function encodeRecord(payload: Uint8Array): { bytes: Buffer; parts: number } {
  assertArg(payload.length <= RECORDIO_MAX_LENGTH, 'encodeRecord', 'payload.length', payload.length, `< 2^29`);
  const len = payload.length;
  const lowerAlign = len & ~3;
  const chunks: Buffer[] = [];
  let dptr = 0;
  let parts = 0;
  const head = (cflag: number, n: number): Buffer => {
    const h = Buffer.allocUnsafe(8);
    h.writeUInt32LE(RECORDIO_MAGIC, 0);
    h.writeUInt32LE(encodeLRec(cflag, n), 4);
    return h;
  };
  const src = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  for (let i = 0; i < lowerAlign; i += 4) {
    if (src[i] === 0x0a && src[i + 1] === 0x23 && src[i + 2] === 0xd7 && src[i + 3] === 0xce) {
      chunks.push(head(dptr === 0 ? 1 : 2, i - dptr));
      if (i !== dptr) chunks.push(src.subarray(dptr, i));
      dptr = i + 4;
      parts++;
    }
  }
  chunks.push(head(dptr !== 0 ? 3 : 0, len - dptr));
  if (len !== dptr) chunks.push(src.subarray(dptr, len));
  const pad = ceil4(len) - len;
  if (pad > 0) chunks.push(Buffer.alloc(pad));
  return { bytes: Buffer.concat(chunks), parts: parts + 1 };
}

/** One logical record read from a `.rec`. */
export interface RawRecord {
  /** Byte offset of the record's first magic word. */
  offset: number;
  /** The reassembled payload. */
  payload: Buffer;
  /** Physical parts the record was stored in (1 unless the payload held the magic word). */
  parts: number;
  /** Offset just past the record (its last part's padding included). */
  end: number;
}

/**
 * Reads the logical record starting at `offset` of an open file (dmlc `RecordIOReader::NextRecord`).
 * @throws PfcError `E_RECORDIO_MAGIC` (no magic word where a record must start), `E_RECORDIO_TRUNCATED` (the file
 *   ends inside a record), `E_RECORDIO_CFLAG` (a part out of order)
 */
function readRecordAt(fd: number, file: string, fileSize: number, offset: number, key?: number): RawRecord {
  const where = (o: number) => `${file}${key === undefined ? '' : ` key ${key}`} at byte offset ${o}`;
  const chunks: Buffer[] = [];
  let pos = offset;
  let parts = 0;
  const header = Buffer.allocUnsafe(8);
  for (;;) {
    if (pos + 8 > fileSize) {
      throw new PfcError('E_RECORDIO_TRUNCATED', `RecordIO: ${where(pos)}: file ends (size ${fileSize}) inside a record header`, {
        details: { file, key, offset: pos, fileSize, recordOffset: offset },
      });
    }
    readSync(fd, header, 0, 8, pos);
    const magic = header.readUInt32LE(0);
    if (magic !== RECORDIO_MAGIC) {
      throw new PfcError(
        'E_RECORDIO_MAGIC',
        `RecordIO: ${where(pos)}: expected magic 0xced7230a, got 0x${magic.toString(16).padStart(8, '0')}`,
        { details: { file, key, offset: pos, actual: magic, recordOffset: offset } },
      );
    }
    const lrec = header.readUInt32LE(4);
    const cflag = (lrec >>> 29) & 7;
    const length = lrec & LENGTH_MASK;
    const expectContinuation = parts > 0;
    if (cflag > 3 || (expectContinuation ? cflag !== 2 && cflag !== 3 : cflag !== 0 && cflag !== 1)) {
      throw new PfcError(
        'E_RECORDIO_CFLAG',
        `RecordIO: ${where(pos)}: part ${parts + 1} has cflag ${cflag}, expected ${expectContinuation ? '2 or 3' : '0 or 1'}`,
        { details: { file, key, offset: pos, cflag, recordOffset: offset } },
      );
    }
    const padded = ceil4(length);
    if (pos + 8 + padded > fileSize) {
      throw new PfcError(
        'E_RECORDIO_TRUNCATED',
        `RecordIO: ${where(pos)}: record of ${length} bytes runs past the end of the file (size ${fileSize})`,
        { details: { file, key, offset: pos, length, fileSize, recordOffset: offset } },
      );
    }
    const data = Buffer.allocUnsafe(length);
    if (length > 0) readSync(fd, data, 0, length, pos + 8);
    chunks.push(data);
    parts++;
    pos += 8 + padded;
    if (cflag === 0 || cflag === 3) break;
    chunks.push(MAGIC_BYTES);
  }
  return { offset, payload: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), parts, end: pos };
}

/**
 * Key → offset lookup. Dense keys (the usual 0…N or 1…N) live in a Float64Array indexed by key, which for tens of
 * millions of records costs 8 bytes each instead of a Map entry; anything else falls back to a Map.
 */
class KeyIndex {
  private readonly dense: Float64Array | null;
  private readonly map: Map<number, number> | null;

  constructor(keys: ArrayLike<number>, offsets: ArrayLike<number>) {
    let max = -1;
    let ok = true;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      if (!(Number.isInteger(k) && k >= 0)) ok = false;
      else if (k > max) max = k;
    }
    if (ok && max < 2 * keys.length + 1024) {
      this.dense = new Float64Array(max + 1).fill(-1);
      for (let i = 0; i < keys.length; i++) this.dense[keys[i]!] = offsets[i]!;
      this.map = null;
    } else {
      this.dense = null;
      this.map = new Map();
      for (let i = 0; i < keys.length; i++) this.map.set(keys[i]!, offsets[i]!);
    }
  }

  get(key: number): number | undefined {
    if (this.dense) {
      const o = Number.isInteger(key) && key >= 0 && key < this.dense.length ? this.dense[key]! : -1;
      return o < 0 ? undefined : o;
    }
    return this.map!.get(key);
  }
}

/**
 * Parses `.idx` bytes (`key<TAB>offset` per line, any blank or `\r`) into keys in file order and their offsets; a
 * key listed twice keeps its first position and its last offset (the dict `MXIndexedRecordIO` builds).
 * @throws PfcError `E_RECORDIO_IDX` naming the line
 */
function parseIdxBytes(buf: Uint8Array, file: string): { keys: number[]; offsets: number[] } {
  // at most one entry per 4 bytes ("0\t0\n"); grown on demand
  let cap = 1024;
  let ks = new Float64Array(cap);
  let os = new Float64Array(cap);
  let count = 0;
  let line = 1;
  let i = 0;
  const n = buf.length;
  const bad = (): never => {
    let e = i;
    while (e < n && buf[e] !== 10) e++;
    let st = i;
    while (st > 0 && buf[st - 1] !== 10) st--;
    const text = Buffer.from(buf.subarray(st, Math.min(e, st + 80))).toString('utf8');
    throw new PfcError('E_RECORDIO_IDX', `RecordIO: ${file} line ${line}: expected 'key<TAB>offset', got ${JSON.stringify(text)}`, {
      details: { file, line },
    });
  };
  const isSpace = (c: number) => c === 9 || c === 32 || c === 13;
  while (i < n) {
    while (i < n && isSpace(buf[i]!)) i++;
    if (i < n && buf[i] === 10) {
      i++;
      line++;
      continue;
    }
    if (i >= n) break;
    let neg = false;
    if (buf[i] === 45) {
      neg = true;
      i++;
    }
    let key = 0;
    let digits = 0;
    while (i < n && buf[i]! >= 48 && buf[i]! <= 57) {
      key = key * 10 + (buf[i]! - 48);
      i++;
      digits++;
    }
    if (digits === 0 || i >= n || !isSpace(buf[i]!)) bad();
    while (i < n && isSpace(buf[i]!)) i++;
    let off = 0;
    digits = 0;
    while (i < n && buf[i]! >= 48 && buf[i]! <= 57) {
      off = off * 10 + (buf[i]! - 48);
      i++;
      digits++;
    }
    if (digits === 0) bad();
    while (i < n && isSpace(buf[i]!)) i++;
    if (i < n && buf[i] !== 10) bad();
    if (neg) key = -key;
    if (count === cap) {
      cap *= 2;
      const k2 = new Float64Array(cap);
      k2.set(ks);
      ks = k2;
      const o2 = new Float64Array(cap);
      o2.set(os);
      os = o2;
    }
    ks[count] = key;
    os[count] = off;
    count++;
  }
  let increasing = true;
  for (let j = 1; j < count && increasing; j++) if (!(ks[j]! > ks[j - 1]!)) increasing = false;
  if (increasing) return { keys: Array.from(ks.subarray(0, count)), offsets: Array.from(os.subarray(0, count)) };
  // possibly repeated keys: first position, last offset
  let max = -1;
  let dense = true;
  for (let j = 0; j < count; j++) {
    const k = ks[j]!;
    if (k < 0) dense = false;
    else if (k > max) max = k;
  }
  dense &&= max < 2 * count + 1024;
  const firstAt = dense ? new Int32Array(max + 1).fill(-1) : null;
  const pos = dense ? null : new Map<number, number>();
  const keys: number[] = [];
  const offsets: number[] = [];
  for (let j = 0; j < count; j++) {
    const k = ks[j]!;
    const at = firstAt ? firstAt[k]! : (pos!.get(k) ?? -1);
    if (at < 0) {
      if (firstAt) firstAt[k] = keys.length;
      else pos!.set(k, keys.length);
      keys.push(k);
      offsets.push(os[j]!);
    } else offsets[at] = os[j]!;
  }
  return { keys, offsets };
}

/** Parses `.idx` text (`key\toffset` per line) into keys in file order and their offsets. */
export function parseIdx(text: string, file = '<idx>'): { keys: number[]; offsets: Map<number, number> } {
  const { keys, offsets } = parseIdxBytes(Buffer.from(text, 'utf8'), file);
  return { keys, offsets: new Map(keys.map((k, i) => [k, offsets[i]!])) };
}

/** `.idx` text for keys and offsets: `key\toffset\n` per record, as `MXIndexedRecordIO` writes it. */
export function formatIdx(entries: Iterable<readonly [number, number]>): string {
  let s = '';
  for (const [k, o] of entries) s += `${k}\t${o}\n`;
  return s;
}

/** The `.idx` path beside a `.rec` (`train.rec` → `train.idx`). */
export function idxPathFor(recPath: string): string {
  return recPath.endsWith('.rec') ? `${recPath.slice(0, -4)}.idx` : `${recPath}.idx`;
}

export interface RecordIOReaderOptions {
  /** Path of the `.idx`; default the `.rec` path with `.idx`. `null` scans the file for record offsets instead. */
  idx?: string | null;
  /**
   * `.idx` entries whose offset lies past the end of the `.rec`: throw `E_RECORDIO_IDX` (default) or leave them out
   * of `keys` and list them in `badIndexEntries` (for tools that report every problem).
   */
  badIndex?: 'error' | 'drop';
}

/**
 * Random-access reader of an MXNet `.rec` (with its `.idx`, or by scanning the file when there is none).
 * Reads are synchronous `pread`s on one file descriptor; call {@link close} when done.
 */
export class RecordIOReader {
  readonly path: string;
  /** Record keys in `.idx` order; when scanned, in file order: the IRHeader ids if unique, else record numbers. */
  readonly keys: readonly number[];
  /** Whether the keys came from an `.idx` (false: the file was scanned). */
  readonly indexed: boolean;
  readonly fileSize: number;
  /** `.idx` errors left out with `badIndex: 'drop'`. */
  readonly badIndexEntries: PfcError[] = [];
  private readonly offsets: KeyIndex;
  private fd: number;

  /**
   * @param path the `.rec` file
   * @throws PfcError `E_RECORDIO_OPEN` when the file cannot be opened, `E_RECORDIO_IDX` for a malformed `.idx`
   *   or an offset past the end of the `.rec`
   */
  constructor(path: string, options: RecordIOReaderOptions = {}) {
    this.path = path;
    try {
      this.fd = openSync(path, 'r');
    } catch (cause) {
      throw new PfcError('E_RECORDIO_OPEN', `RecordIO: cannot open ${path}: ${(cause as Error).message}`, { cause, details: { file: path } });
    }
    this.fileSize = fstatSync(this.fd).size;
    const idx = options.idx === undefined ? idxPathFor(path) : options.idx;
    if (idx !== null && existsSync(idx)) {
      const parsed = parseIdxBytes(readFileSync(idx), idx);
      const keys: number[] = [];
      const offsets: number[] = [];
      for (let i = 0; i < parsed.keys.length; i++) {
        const k = parsed.keys[i]!;
        const o = parsed.offsets[i]!;
        if (o + 8 > this.fileSize) {
          const err = new PfcError(
            'E_RECORDIO_IDX',
            `RecordIO: ${idx}: key ${k} has byte offset ${o}, past the end of ${path} (size ${this.fileSize})`,
            { details: { file: idx, rec: path, key: k, offset: o, fileSize: this.fileSize } },
          );
          if (options.badIndex !== 'drop') {
            closeSync(this.fd);
            throw err;
          }
          this.badIndexEntries.push(err);
          continue;
        }
        keys.push(k);
        offsets.push(o);
      }
      this.keys = keys;
      this.offsets = new KeyIndex(keys, offsets);
      this.indexed = true;
    } else if (idx !== null && options.idx !== undefined) {
      closeSync(this.fd);
      throw new PfcError('E_RECORDIO_OPEN', `RecordIO: index ${idx} does not exist`, { details: { file: idx } });
    } else {
      closeSync(this.fd);
      const { entries, error } = scanRecordOffsets(path, true);
      if (error) throw error;
      // Keys are the IRHeader ids (im2rec and InsightFace write the key there) when they are unique,
      // record numbers otherwise.
      const ids = new Set(entries.map((e) => e[0]));
      const byId = ids.size === entries.length;
      this.keys = entries.map((e, i) => (byId ? e[0] : i));
      this.offsets = new KeyIndex(this.keys, entries.map((e) => e[1]));
      this.fd = openSync(path, 'r');
      this.indexed = false;
    }
  }

  /** Number of logical records. */
  get length(): number {
    return this.keys.length;
  }

  /** Whether `key` is in the index. */
  has(key: number): boolean {
    return this.offsets.get(key) !== undefined;
  }

  /** Byte offset of `key`'s record. @throws PfcError `E_RECORDIO_KEY` */
  offsetOf(key: number): number {
    const o = this.offsets.get(key);
    if (o === undefined) {
      throw new PfcError('E_RECORDIO_KEY', `RecordIO: ${this.path}: no record with key ${key} (${this.keys.length} keys)`, {
        details: { file: this.path, key },
      });
    }
    return o;
  }

  /** Reads the record of `key` (payload reassembled across split parts). */
  readRecord(key: number): RawRecord {
    return readRecordAt(this.checkOpen(), this.path, this.fileSize, this.offsetOf(key), key);
  }

  /** The payload of `key`. */
  read(key: number): Buffer {
    return this.readRecord(key).payload;
  }

  /** Reads the record starting at a byte offset. */
  readAt(offset: number): RawRecord {
    return readRecordAt(this.checkOpen(), this.path, this.fileSize, offset);
  }

  /** Yields every record in file order, from byte 0 to the end, independent of the `.idx`. */
  *scan(): Generator<RawRecord> {
    let pos = 0;
    while (pos < this.fileSize) {
      const r = readRecordAt(this.checkOpen(), this.path, this.fileSize, pos);
      yield r;
      pos = r.end;
    }
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  private checkOpen(): number {
    if (this.fd < 0) throw new PfcError('E_RECORDIO_CLOSED', `RecordIO: ${this.path} is closed`, { details: { file: this.path } });
    return this.fd;
  }
}

/**
 * Scans a `.rec` from the start and returns `[key, offset]` for every record, keys taken from the IRHeader `id`
 * field when `useHeaderId` (im2rec and InsightFace write the key there) and record numbers otherwise.
 * Stops at the first damaged record and reports it in `error` (the entries before it are good).
 */
export function scanRecordOffsets(path: string, useHeaderId = true): { entries: Array<[number, number]>; error: PfcError | null } {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const entries: Array<[number, number]> = [];
    let pos = 0;
    while (pos < size) {
      let r: RawRecord;
      try {
        r = readRecordAt(fd, path, size, pos);
      } catch (e) {
        if (e instanceof PfcError) return { entries, error: e };
        throw e;
      }
      const key = useHeaderId && r.payload.length >= 24 ? Number(r.payload.readBigUInt64LE(8)) : entries.length;
      entries.push([key, pos]);
      pos = r.end;
    }
    return { entries, error: null };
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes a `.rec` (and its `.idx` on {@link close}) byte for byte as MXNet's `MXIndexedRecordIO` with dmlc-core.
 */
export class RecordIOWriter {
  readonly path: string;
  readonly idxPath: string | null;
  private fd: number;
  private pos = 0;
  private readonly entries: Array<[number, number]> = [];
  private readonly seen = new Set<number>();

  /**
   * @param path the `.rec` to create (truncated if it exists)
   * @param idxPath the `.idx` to write on close; default beside the `.rec`; `null` for none
   */
  constructor(path: string, idxPath: string | null = idxPathFor(path)) {
    this.path = path;
    this.idxPath = idxPath;
    try {
      this.fd = openSync(path, 'w');
    } catch (cause) {
      throw new PfcError('E_RECORDIO_OPEN', `RecordIO: cannot create ${path}: ${(cause as Error).message}`, { cause, details: { file: path } });
    }
  }

  /** Bytes written so far (= the offset the next record gets). */
  get offset(): number {
    return this.pos;
  }

  /** Records written so far. */
  get count(): number {
    return this.entries.length;
  }

  /**
   * Appends one logical record under `key` (the `.idx` key).
   * @returns the record's byte offset
   * @throws PfcError `E_RECORDIO_KEY` for a repeated key
   */
  write(key: number, payload: Uint8Array): number {
    if (this.fd < 0) throw new PfcError('E_RECORDIO_CLOSED', `RecordIO: ${this.path} is closed`, { details: { file: this.path } });
    assertArg(Number.isSafeInteger(key), 'RecordIOWriter.write', 'key', key, 'an integer');
    if (this.seen.has(key)) {
      throw new PfcError('E_RECORDIO_KEY', `RecordIO: ${this.path}: key ${key} written twice`, { details: { file: this.path, key } });
    }
    const { bytes } = encodeRecord(payload);
    const at = this.pos;
    let done = 0;
    while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done, at + done);
    this.pos += bytes.length;
    this.seen.add(key);
    this.entries.push([key, at]);
    return at;
  }

  /** Closes the `.rec` and writes the `.idx` (atomically). */
  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
    if (this.idxPath !== null) writeFileAtomic(this.idxPath, Buffer.from(formatIdx(this.entries), "utf8"));
  }
}
