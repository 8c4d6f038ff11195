import { PfcError, assertArg } from '@pfc/core';

/** Bytes of the fixed IRHeader (`struct IfQQ`). */
export const IRHEADER_SIZE = 24;

/** MXNet's `IRHeader`: the prefix of every image record's payload. */
export interface IRHeader {
  /** 0 for a scalar label; otherwise the number of float32 labels that follow the fixed header. */
  flag: number;
  /** The scalar label (flag 0), or the header's `label` field as stored (0 when a label vector follows). */
  label: number;
  /** The label vector when flag > 0, else null. */
  labels: Float32Array | null;
  /** Record id (im2rec: the `.lst` index = the `.idx` key). */
  id: number;
  /** Second id (InsightFace header record: 1). */
  id2: number;
}

/** A record payload split into header and image bytes. */
export interface UnpackedRecord {
  header: IRHeader;
  /** Encoded image bytes (may be empty: InsightFace header and identity records carry none). A view into the payload. */
  image: Buffer;
}

export interface PackHeader {
  /** Scalar label (written with flag 0) or a label vector (flag = its length, `label` field 0), as `mx.recordio.pack`. */
  label: number | ArrayLike<number>;
  id?: number;
  id2?: number;
}

/**
 * Builds a record payload as `mx.recordio.pack(header, s)`: 24-byte IRHeader, the float32 label vector when the
 * label is not a scalar, then the image bytes.
 */
export function packRecord(header: PackHeader, image: Uint8Array = new Uint8Array(0)): Buffer {
  const vec = typeof header.label === 'number' ? null : Array.from(header.label);
  const id = header.id ?? 0;
  const id2 = header.id2 ?? 0;
  assertArg(Number.isSafeInteger(id) && id >= 0, 'packRecord', 'header.id', id, 'a non-negative integer');
  assertArg(Number.isSafeInteger(id2) && id2 >= 0, 'packRecord', 'header.id2', id2, 'a non-negative integer');
  const n = vec ? vec.length : 0;
  const out = Buffer.alloc(IRHEADER_SIZE + 4 * n + image.length);
  out.writeUInt32LE(n, 0);
  out.writeFloatLE(vec ? 0 : (header.label as number), 4);
  out.writeBigUInt64LE(BigInt(id), 8);
  out.writeBigUInt64LE(BigInt(id2), 16);
  if (vec) for (let i = 0; i < n; i++) out.writeFloatLE(vec[i]!, IRHEADER_SIZE + 4 * i);
  out.set(image, IRHEADER_SIZE + 4 * n);
  return out;
}

/**
 * Splits a record payload into its IRHeader and image bytes (`mx.recordio.unpack`).
 * @param where names the record in error messages (file, key, offset)
 * @throws PfcError `E_RECORDIO_HEADER` when the payload is shorter than its header says
 */
export function unpackRecord(payload: Buffer, where: { file?: string; key?: number; offset?: number } = {}): UnpackedRecord {
  const loc = describe(where);
  if (payload.length < IRHEADER_SIZE) {
    throw new PfcError('E_RECORDIO_HEADER', `IRHeader: ${loc}: payload of ${payload.length} bytes is shorter than the 24-byte IRHeader`, {
      details: { ...where, length: payload.length },
    });
  }
  const flag = payload.readUInt32LE(0);
  const label = payload.readFloatLE(4);
  const id = Number(payload.readBigUInt64LE(8));
  const id2 = Number(payload.readBigUInt64LE(16));
  let labels: Float32Array | null = null;
  let start = IRHEADER_SIZE;
  if (flag > 0) {
    if (IRHEADER_SIZE + 4 * flag > payload.length) {
      throw new PfcError(
        'E_RECORDIO_HEADER',
        `IRHeader: ${loc}: flag ${flag} announces ${flag} float32 labels (${4 * flag} bytes) but only ${payload.length - IRHEADER_SIZE} bytes follow the header`,
        { details: { ...where, flag, length: payload.length } },
      );
    }
    labels = new Float32Array(flag);
    for (let i = 0; i < flag; i++) labels[i] = payload.readFloatLE(IRHEADER_SIZE + 4 * i);
    start += 4 * flag;
  }
  return { header: { flag, label, labels, id, id2 }, image: payload.subarray(start) };
}

/**
 * The class of an image record as `MXFaceDataset` takes it: the scalar label, or `labels[0]` for a vector, as an integer.
 * @param requireScalar throw `E_LABEL_SCALAR` for a label vector (strict readers of the im2rec layout)
 * @throws PfcError `E_LABEL_SCALAR`, `E_LABEL_RANGE` (not a finite non-negative integer)
 */
export function classOf(header: IRHeader, where: { file?: string; key?: number; offset?: number } = {}, requireScalar = false): number {
  if (header.labels && requireScalar) {
    throw new PfcError(
      'E_LABEL_SCALAR',
      `IRHeader: ${describe(where)}: expected a scalar label (flag 0), got a label array of ${header.labels.length} (flag ${header.flag})`,
      { details: { ...where, flag: header.flag } },
    );
  }
  const v = header.labels ? header.labels[0] : header.label;
  if (v === undefined || !Number.isFinite(v) || v < 0 || Math.trunc(v) !== v) {
    throw new PfcError('E_LABEL_RANGE', `IRHeader: ${describe(where)}: class label must be a non-negative integer, got ${String(v)}`, {
      details: { ...where, label: v },
    });
  }
  return v;
}

/** `file key K at byte offset O` for messages. */
export function describe(where: { file?: string; key?: number; offset?: number }): string {
  const parts: string[] = [where.file ?? '<record>'];
  if (where.key !== undefined) parts.push(`key ${where.key}`);
  if (where.offset !== undefined) parts.push(`at byte offset ${where.offset}`);
  return parts.join(' ');
}
