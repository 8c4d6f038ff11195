import { PfcError, float16ToFloat32, readFileOrThrow, writeFileAtomic } from '@pfc/core';
import type { StateDict, StateTensor } from './model';

/**
 * safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes of
 * JSON `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { string: string } }` (padded with
 * spaces to a multiple of 8), then the raw little-endian tensor bytes, offsets relative to the data start.
 */

const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4 };

/** Encodes a state dict (float32 and int64 entries) as safetensors bytes, with optional string metadata. */
export function encodeSafetensors(state: StateDict, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, t] of state) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) {
      throw new PfcError('E_WEIGHTS', `encodeSafetensors: tensor '${name}' has ${t.data.length} values for shape [${t.shape.join(', ')}]`, { details: { tensor: name } });
    }
    header[name] = { dtype: t.dtype === 'int64' ? 'I64' : 'F32', shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.length;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** A parsed safetensors file: tensors (floats widened/narrowed to float32, integers to int64) and metadata. */
export interface SafetensorsFile {
  tensors: StateDict;
  metadata: Record<string, string>;
}

/**
 * Decodes safetensors bytes. F32/F16/BF16/F64 tensors become float32, I64/I32 become int64. Throws `E_WEIGHTS`
 * naming the source, tensor and byte offset for a truncated file, a malformed header or an unsupported dtype.
 */
export function decodeSafetensors(bytes: Uint8Array, source = '<buffer>'): SafetensorsFile {
  const fail = (msg: string, details: Record<string, unknown> = {}) => new PfcError('E_WEIGHTS', `${source}: ${msg}`, { details: { file: source, ...details } });
  if (bytes.length < 8) throw fail(`not a safetensors file: ${bytes.length} bytes, need at least 8 (byte offset 0)`, { offset: 0 });
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(bytes.length - 8)) throw fail(`header length ${n} exceeds the file size ${bytes.length} (byte offset 0)`, { offset: 0 });
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + Number(n))).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new PfcError('E_WEIGHTS', `${source}: header is not valid JSON (byte offset 8)`, { cause: err, details: { file: source, offset: 8 } });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw fail('header is not a JSON object (byte offset 8)');
  const dataStart = 8 + Number(n);
  const dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: StateDict = new Map();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      for (const [k, v] of Object.entries((entry ?? {}) as Record<string, unknown>)) metadata[k] = String(v);
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const width = typeof e.dtype === 'string' ? DTYPE_BYTES[e.dtype] : undefined;
    if (!width) throw fail(`tensor '${name}' has unsupported dtype ${JSON.stringify(e.dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`, { tensor: name });
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw fail(`tensor '${name}' has an invalid shape ${JSON.stringify(shape)}`, { tensor: name });
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isInteger(d) && d >= 0)) {
      throw fail(`tensor '${name}' has invalid data_offsets ${JSON.stringify(offs)}`, { tensor: name });
    }
    const [begin, end] = offs as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end < begin || end > dataLen || end - begin !== count * width) {
      throw fail(`tensor '${name}': data_offsets [${begin}, ${end}] do not hold ${count} ${e.dtype} values within ${dataLen} data bytes (byte offset ${dataStart + begin})`, {
        tensor: name,
        offset: dataStart + begin,
      });
    }
    // A fresh, aligned copy (a Node Buffer's slice would share, and misalign, the pooled memory).
    const raw = new Uint8Array(end - begin);
    raw.set(bytes.subarray(dataStart + begin, dataStart + end));
    const rdv = new DataView(raw.buffer);
    let t: StateTensor;
    switch (e.dtype) {
      case 'F32':
        t = { dtype: 'float32', shape: shape as number[], data: new Float32Array(raw.buffer) };
        break;
      case 'F64':
        t = { dtype: 'float32', shape: shape as number[], data: Float32Array.from(new Float64Array(raw.buffer)) };
        break;
      case 'F16':
        t = { dtype: 'float32', shape: shape as number[], data: float16ToFloat32(new Uint16Array(raw.buffer)) };
        break;
      case 'BF16': {
        const f = new Float32Array(count);
        const u = new Uint32Array(f.buffer);
        for (let i = 0; i < count; i++) u[i] = rdv.getUint16(2 * i, true) << 16;
        t = { dtype: 'float32', shape: shape as number[], data: f };
        break;
      }
      case 'I64':
        t = { dtype: 'int64', shape: shape as number[], data: new BigInt64Array(raw.buffer) };
        break;
      default:
        t = { dtype: 'int64', shape: shape as number[], data: BigInt64Array.from(new Int32Array(raw.buffer), (v) => BigInt(v)) };
    }
    tensors.set(name, t);
  }
  return { tensors, metadata };
}

/** Reads a `.safetensors` file (see {@link decodeSafetensors}). */
export function readSafetensors(path: string): SafetensorsFile {
  return decodeSafetensors(readFileOrThrow(path, 'E_WEIGHTS'), path);
}

/** Writes a state dict as a `.safetensors` file atomically. */
export function writeSafetensors(path: string, state: StateDict, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, encodeSafetensors(state, metadata));
}
