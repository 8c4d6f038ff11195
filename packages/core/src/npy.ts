import { PfcError } from './errors';
import { readFileOrThrow, writeFileAtomic } from './fs';
import { fromFloat16Bits } from './float16';

/** The element types a `.npy` file can carry here, by numpy `descr`. */
export type NpyDtype = 'f2' | 'f4' | 'f8' | 'i1' | 'i2' | 'i4' | 'i8' | 'u1' | 'u2' | 'u4' | 'u8' | 'b1';

/** Typed array per dtype; `f2` is carried as raw binary16 bits in a Uint16Array, `b1` as 0/1 bytes. */
export type NpyData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array;

/** An n-dimensional array as stored in a `.npy` file (C order). */
export interface NpyArray<D extends NpyData = NpyData> {
  dtype: NpyDtype;
  shape: number[];
  data: D;
}

const CTORS: Record<NpyDtype, { new (buf: ArrayBuffer, off: number, len: number): NpyData; BYTES_PER_ELEMENT: number }> = {
  f2: Uint16Array,
  f4: Float32Array,
  f8: Float64Array,
  i1: Int8Array,
  i2: Int16Array,
  i4: Int32Array,
  i8: BigInt64Array,
  u1: Uint8Array,
  u2: Uint16Array,
  u4: Uint32Array,
  u8: BigUint64Array,
  b1: Uint8Array,
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

/**
 * Parses `.npy` bytes (format versions 1–3, little-endian or single-byte dtypes, C or Fortran order;
 * Fortran-ordered arrays are transposed to C order).
 * @param source a label for error messages (usually the file path)
 */
export function parseNpy(bytes: Uint8Array, source = '<buffer>'): NpyArray {
  const fail = (msg: string, offset: number) =>
    new PfcError('E_NPY_FORMAT', `${source}: ${msg} (byte offset ${offset})`, { details: { file: source, offset } });
  if (bytes.length < 10 || MAGIC.some((m, i) => bytes[i] !== m)) throw fail('not a .npy file: bad magic string', 0);
  const major = bytes[6]!;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = dv.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    headerLen = dv.getUint32(8, true);
    headerStart = 12;
  } else throw fail(`unsupported .npy format version ${major}`, 6);
  if (headerStart + headerLen > bytes.length) throw fail('header runs past the end of the file', headerStart);
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(headerStart, headerStart + headerLen));
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeStr = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeStr === undefined) throw fail(`malformed header ${JSON.stringify(header)}`, headerStart);
  const shape = shapeStr
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => Number(s.replace(/L$/, '')));
  const endian = descr[0]!;
  const dtype = descr.slice(1) as NpyDtype;
  if (!(dtype in CTORS)) throw fail(`unsupported dtype '${descr}'`, headerStart);
  const ctor = CTORS[dtype];
  if (endian === '>' && ctor.BYTES_PER_ELEMENT > 1) throw fail(`big-endian dtype '${descr}' is not supported`, headerStart);
  const count = shape.reduce((a, b) => a * b, 1);
  const dataStart = headerStart + headerLen;
  const need = count * ctor.BYTES_PER_ELEMENT;
  if (dataStart + need > bytes.length) {
    throw fail(`data truncated: need ${need} bytes for shape [${shape}] ${descr}, have ${bytes.length - dataStart}`, dataStart);
  }
  const copy = new ArrayBuffer(need);
  new Uint8Array(copy).set(bytes.subarray(dataStart, dataStart + need));
  let data = new ctor(copy, 0, count);
  if (fortran === 'True' && shape.length > 1) data = fortranToC(data, shape);
  return { dtype, shape, data };
}

function fortranToC(data: NpyData, shape: number[]): NpyData {
  const out = new (data.constructor as new (n: number) => NpyData)(data.length);
  const n = shape.length;
  const idx = new Array<number>(n).fill(0);
  for (let c = 0; c < data.length; c++) {
    let f = 0;
    let stride = 1;
    for (let k = 0; k < n; k++) {
      f += idx[k]! * stride;
      stride *= shape[k]!;
    }
    (out as unknown as unknown[])[c] = (data as unknown as unknown[])[f];
    for (let k = n - 1; k >= 0; k--) {
      if (++idx[k]! < shape[k]!) break;
      idx[k] = 0;
    }
  }
  return out;
}

/**
 * Reads a `.npy` file. Errors are `PfcError`: `E_NPY_OPEN` naming the file when it cannot be read, `E_NPY_FORMAT`
 * naming the file and byte offset when it is not a valid `.npy`.
 */
export function readNpy(path: string): NpyArray {
  return parseNpy(readFileOrThrow(path, 'E_NPY_OPEN'), path);
}

function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return 'f4';
  if (data instanceof Float64Array) return 'f8';
  if (data instanceof Int8Array) return 'i1';
  if (data instanceof Int16Array) return 'i2';
  if (data instanceof Int32Array) return 'i4';
  if (data instanceof BigInt64Array) return 'i8';
  if (data instanceof Uint8Array) return 'u1';
  if (data instanceof Uint16Array) return 'u2';
  if (data instanceof Uint32Array) return 'u4';
  return 'u8';
}

/**
 * Serialises an array as `.npy` (version 1.0, C order, little-endian).
 * @param dtype overrides the dtype deduced from the typed array (`'f2'` for Uint16Array binary16 bits, `'b1'` for 0/1 bytes)
 */
export function encodeNpy(data: NpyData, shape: readonly number[] = [data.length], dtype: NpyDtype = dtypeOf(data)): Uint8Array {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) {
    throw new PfcError('E_SHAPE', `encodeNpy: shape [${shape}] holds ${count} elements but data has ${data.length}`);
  }
  const endian = CTORS[dtype].BYTES_PER_ELEMENT === 1 ? '|' : '<';
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${endian}${dtype}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}

/** Writes a `.npy` file atomically. */
export function writeNpy(path: string, data: NpyData, shape?: readonly number[], dtype?: NpyDtype): void {
  writeFileAtomic(path, encodeNpy(data, shape, dtype));
}

/** Converts any numeric npy array to Float64Array (binary16 and 64-bit integers included). */
export function npyToFloat64(arr: NpyArray): Float64Array {
  const out = new Float64Array(arr.data.length);
  if (arr.dtype === 'f2') {
    for (let i = 0; i < out.length; i++) out[i] = fromFloat16Bits((arr.data as Uint16Array)[i]!);
    return out;
  }
  for (let i = 0; i < out.length; i++) out[i] = Number(arr.data[i]!);
  return out;
}
