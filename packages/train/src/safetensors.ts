import { readFileSync } from 'node:fs';
import { PfcError, writeFileAtomic } from '@pfc/core';

/** A tensor of a safetensors file: F32 or I64 (int64 as BigInt64Array). */
export interface NamedTensor {
  dtype: 'float32' | 'int64';
  shape: number[];
  data: Float32Array | BigInt64Array;
}

const DTYPE = { float32: 'F32', int64: 'I64' } as const;

/**
 * Encodes tensors in the safetensors format (8-byte LE header length, JSON header with `dtype`, `shape`,
 * `data_offsets`, optional `__metadata__` of strings, then the little-endian data), names sorted as the Python library does.
 */
export function encodeSafetensors(tensors: Map<string, NamedTensor>, metadata: Record<string, string> = {}): Uint8Array[] {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let off = 0;
  for (const n of names) {
    const t = tensors.get(n)!;
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) {
      throw new PfcError('E_SHAPE', `encodeSafetensors: tensor '${n}' has shape [${t.shape.join(', ')}] (${count} elements) but ${t.data.length} values`);
    }
    header[n] = { dtype: DTYPE[t.dtype], shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const head = new Uint8Array(8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  head.set(new TextEncoder().encode(json), 8);
  return [head, ...names.map((n) => new Uint8Array(tensors.get(n)!.data.buffer, tensors.get(n)!.data.byteOffset, tensors.get(n)!.data.byteLength))];
}

/** Writes a safetensors file atomically. */
export function writeSafetensors(path: string, tensors: Map<string, NamedTensor>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

/**
 * Reads a safetensors file of F32/I64 tensors.
 * @throws `E_SAFETENSORS` naming the file for a malformed header, an unsupported dtype or out-of-range offsets
 */
export function readSafetensors(path: string): { tensors: Map<string, NamedTensor>; metadata: Record<string, string> } {
  const buf = readFileSync(path);
  const bad = (why: string) => new PfcError('E_SAFETENSORS', `${path}: ${why}`, { details: { file: path } });
  if (buf.length < 8) throw bad(`file of ${buf.length} bytes is shorter than the 8-byte header length`);
  const n = Number(buf.readBigUInt64LE(0));
  if (8 + n > buf.length) throw bad(`header length ${n} runs past the end of the file (${buf.length} bytes)`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  } catch (err) {
    throw bad(`header at byte 8 is not JSON: ${(err as Error).message}`);
  }
  const tensors = new Map<string, NamedTensor>();
  const base = 8 + n;
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets } = e as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const [a, b] = data_offsets;
    if (!(a >= 0 && b >= a && base + b <= buf.length)) throw bad(`tensor '${name}' data_offsets [${a}, ${b}] outside the ${buf.length - base}-byte data section`);
    const bytes = new Uint8Array(buf.subarray(base + a, base + b)).slice();
    if (dtype === 'F32') tensors.set(name, { dtype: 'float32', shape, data: new Float32Array(bytes.buffer) });
    else if (dtype === 'I64') tensors.set(name, { dtype: 'int64', shape, data: new BigInt64Array(bytes.buffer) });
    else throw bad(`tensor '${name}' has dtype ${dtype}; only F32 and I64 are read here`);
  }
  return { tensors, metadata: (header.__metadata__ as Record<string, string> | undefined) ?? {} };
}
