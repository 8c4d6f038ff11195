import { readFileSync } from 'node:fs';
import { PfcError, assertArg, writeFileAtomic } from '@pfc/core';
import { isPickledNdarray, isPickledTuple, parsePickle } from './pickle';
import type { PickleValue } from './pickle';

/** A verification set: `images[2p]` and `images[2p+1]` (encoded JPEG/PNG) form pair p, `issame[p]` its label. */
export interface VerificationBin {
  /** Encoded images, 2P of them. */
  images: Uint8Array[];
  /** P labels: true for a genuine pair. */
  issame: boolean[];
  /** The pickle protocol the file declared (0 when it had no PROTO opcode). */
  protocol: number;
}

/**
 * Parses an InsightFace verification `.bin` (a pickle of `(bins, issame_list)`), with the safe pickle subset of
 * {@link parsePickle}: Python 2 strings, Python 3 bytes and numpy uint8 arrays are all read as the encoded images.
 * @param bytes the whole file
 * @param source the file path, for error messages
 * @throws PfcError `E_PICKLE_UNSAFE`, `E_PICKLE_FORMAT`, `E_BIN_FORMAT` (wrong structure or counts)
 */
export function parseVerificationBin(bytes: Uint8Array, source = '<buffer>'): VerificationBin {
  const value = parsePickle(bytes, source);
  const bad = (msg: string) => new PfcError('E_BIN_FORMAT', `${source}: ${msg}; expected a pickled (bins, issame_list) tuple`, { details: { file: source } });
  if (!isPickledTuple(value) || value.items.length !== 2) throw bad('top-level value is not a 2-tuple');
  const [bins, labels] = value.items;
  const seq = (v: PickleValue | undefined): PickleValue[] | null => (Array.isArray(v) ? v : isPickledTuple(v) ? v.items : null);
  const binList = seq(bins);
  const labelList = seq(labels);
  if (binList === null) throw bad('bins is not a list');
  if (labelList === null) throw bad('issame_list is not a list');
  const images = binList.map((b, i) => {
    if (b instanceof Uint8Array) return b;
    if (isPickledNdarray(b)) return b.data;
    throw bad(`bins[${i}] is neither bytes nor a numpy uint8 array`);
  });
  const issame = labelList.map((l, i) => {
    if (typeof l === 'boolean') return l;
    if (l === 0 || l === 1) return l === 1;
    throw bad(`issame_list[${i}] is not a bool`);
  });
  if (images.length !== 2 * issame.length) throw bad(`${images.length} images for ${issame.length} pairs (need exactly 2 per pair)`);
  const protocol = bytes[0] === 0x80 ? bytes[1]! : 0;
  return { images, issame, protocol };
}

/** Reads a verification `.bin` file; see {@link parseVerificationBin}. */
export function readVerificationBin(path: string): VerificationBin {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (cause) {
    throw new PfcError('E_NOT_FOUND', `cannot read verification set '${path}': ${(cause as Error).message}`, { cause, details: { file: path } });
  }
  return parseVerificationBin(bytes, path);
}

const FRAME_TARGET = 64 * 1024;

/**
 * Serialises a verification set as pickle protocol 4 (framed), the same structure Python's
 * `pickle.dump((bins, issame_list), f, protocol=4)` writes with `bins` a list of `bytes`.
 * @param images 2P encoded images (JPEG/PNG bytes)
 * @param issame P labels
 */
export function encodeVerificationBin(images: readonly Uint8Array[], issame: readonly boolean[]): Uint8Array {
  assertArg(images.length === 2 * issame.length, 'encodeVerificationBin', 'images.length', images.length, `2 × issame.length = ${2 * issame.length}`);
  const frames: Uint8Array[] = [];
  let cur: Uint8Array[] = [];
  let curLen = 0;
  const flush = () => {
    if (curLen === 0) return;
    const head = new Uint8Array(9);
    head[0] = 0x95;
    new DataView(head.buffer).setBigUint64(1, BigInt(curLen), true);
    frames.push(head, ...cur);
    cur = [];
    curLen = 0;
  };
  // one opcode is never split across frames (Python's unframer rejects that)
  const emit = (...parts: Uint8Array[]) => {
    for (const p of parts) {
      cur.push(p);
      curLen += p.length;
    }
    if (curLen >= FRAME_TARGET) flush();
  };
  const op = (...b: number[]) => Uint8Array.from(b);
  const u32 = (n: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n, true);
    return b;
  };
  emit(op(0x5d), op(0x94)); // EMPTY_LIST MEMOIZE
  for (let start = 0; start < images.length; start += 1000) {
    emit(op(0x28)); // MARK
    for (const img of images.slice(start, start + 1000)) {
      if (img.length < 256) emit(op(0x43, img.length), img);
      else emit(op(0x42), u32(img.length), img);
      emit(op(0x94));
    }
    emit(op(0x65)); // APPENDS
  }
  emit(op(0x5d), op(0x94));
  for (let start = 0; start < issame.length; start += 1000) {
    emit(op(0x28));
    emit(Uint8Array.from(issame.slice(start, start + 1000), (s) => (s ? 0x88 : 0x89)));
    emit(op(0x65));
  }
  emit(op(0x86), op(0x94), op(0x2e)); // TUPLE2 MEMOIZE STOP
  flush();
  const total = 2 + frames.reduce((a, f) => a + f.length, 0);
  const out = new Uint8Array(total);
  out[0] = 0x80;
  out[1] = 4;
  let off = 2;
  for (const f of frames) {
    out.set(f, off);
    off += f.length;
  }
  return out;
}

/**
 * Writes a verification `.bin` (pickle protocol 4) that InsightFace's `load_bin` and this package both read.
 * @param path output file (written atomically)
 * @param images 2P encoded images (JPEG/PNG bytes); pair p is images 2p and 2p+1
 * @param issame P labels
 */
export function writeVerificationBin(path: string, images: readonly Uint8Array[], issame: readonly boolean[]): void {
  writeFileAtomic(path, encodeVerificationBin(images, issame));
}
