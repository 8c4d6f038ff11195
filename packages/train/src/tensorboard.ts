import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as protobuf from 'protobufjs';
import { PfcError } from '@pfc/core';

/**
 * The subset of TensorFlow's `tensorflow/core/util/event.proto` and `tensorflow/core/framework/summary.proto` that
 * scalar logging needs, with the official field numbers and types, so files parse with the official definitions.
 */
export const TENSORBOARD_PROTO = `
syntax = "proto3";
package tensorflow;
message Summary {
  message Value {
    string node_name = 7;
    string tag = 1;
    oneof value {
      float simple_value = 2;
    }
  }
  repeated Value value = 1;
}
message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    Summary summary = 5;
  }
}
`;

let eventType: protobuf.Type | null = null;
/** The `tensorflow.Event` message type (protobufjs). */
export function tensorboardEventType(): protobuf.Type {
  eventType ??= protobuf.parse(TENSORBOARD_PROTO).root.lookupType('tensorflow.Event');
  return eventType;
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli) of `data`, as uint32. */
export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: ((crc >>> 15) | (crc << 17)) + 0xa282ead8 (mod 2³²). */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: uint64 LE length, masked CRC of the length bytes, the data, masked CRC of the data. */
export function encodeTfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/**
 * Splits a TFRecord file into its records, checking both CRCs of each.
 * @throws `E_TFRECORD` naming the file and byte offset of a truncated record or a CRC mismatch
 */
export function decodeTfRecords(bytes: Uint8Array, file = 'tfrecord'): Uint8Array[] {
  const out: Uint8Array[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = 0;
  while (off < bytes.length) {
    if (off + 12 > bytes.length) throw new PfcError('E_TFRECORD', `${file}: truncated record header at byte ${off}`, { details: { file, offset: off } });
    const len = Number(dv.getBigUint64(off, true));
    const lenCrc = dv.getUint32(off + 8, true);
    const want = maskedCrc32c(bytes.subarray(off, off + 8));
    if (lenCrc !== want) throw new PfcError('E_TFRECORD', `${file}: length CRC mismatch at byte ${off + 8}: stored ${lenCrc}, computed ${want}`, { details: { file, offset: off + 8 } });
    if (off + 12 + len + 4 > bytes.length) throw new PfcError('E_TFRECORD', `${file}: truncated record of ${len} bytes at byte ${off}`, { details: { file, offset: off } });
    const data = bytes.subarray(off + 12, off + 12 + len);
    const dataCrc = dv.getUint32(off + 12 + len, true);
    const wantData = maskedCrc32c(data);
    if (dataCrc !== wantData) throw new PfcError('E_TFRECORD', `${file}: data CRC mismatch at byte ${off + 12 + len}: stored ${dataCrc}, computed ${wantData}`, { details: { file, offset: off + 12 + len } });
    out.push(data);
    off += 12 + len + 4;
  }
  return out;
}

/** A decoded scalar event. */
export interface ScalarEvent {
  wallTime: number;
  step: number;
  tag: string;
  value: number;
}

/**
 * Reads an event file back (CRCs checked) and returns its `file_version` and scalar summaries.
 */
export function readEventFile(path: string): { fileVersion: string | null; scalars: ScalarEvent[] } {
  const type = tensorboardEventType();
  let fileVersion: string | null = null;
  const scalars: ScalarEvent[] = [];
  for (const rec of decodeTfRecords(new Uint8Array(readFileSync(path)), path)) {
    const ev = type.toObject(type.decode(rec), { longs: Number, defaults: false }) as {
      wallTime?: number;
      step?: number;
      fileVersion?: string;
      summary?: { value?: { tag?: string; simpleValue?: number }[] };
    };
    if (ev.fileVersion !== undefined) fileVersion = ev.fileVersion;
    for (const v of ev.summary?.value ?? []) {
      scalars.push({ wallTime: ev.wallTime ?? 0, step: ev.step ?? 0, tag: v.tag ?? '', value: v.simpleValue ?? 0 });
    }
  }
  return { fileVersion, scalars };
}

/**
 * Writes TensorBoard scalar events (`events.out.tfevents.<seconds>.<host>` in `logDir`), as `SummaryWriter.add_scalar`
 * does. Each record is written and flushed immediately, so a killed run leaves a readable file.
 */
export class SummaryWriter {
  readonly path: string;
  private fd: number;

  /** @param logDir directory (created) */
  constructor(logDir: string, options: { now?: () => number } = {}) {
    mkdirSync(logDir, { recursive: true });
    this.now = options.now ?? (() => Date.now() / 1000);
    const t = this.now();
    this.path = join(logDir, `events.out.tfevents.${Math.floor(t)}.${hostname()}.${process.pid}`);
    this.fd = openSync(this.path, 'a');
    this.writeEvent({ wallTime: t, step: 0, fileVersion: 'brain.Event:2' });
  }

  private readonly now: () => number;

  private writeEvent(ev: Record<string, unknown>): void {
    if (this.fd < 0) throw new PfcError('E_CLOSED', `SummaryWriter: ${this.path} is closed`);
    const type = tensorboardEventType();
    const bytes = type.encode(type.fromObject(ev)).finish();
    const rec = encodeTfRecord(bytes);
    writeSync(this.fd, rec);
  }

  /** Adds one scalar (`tag`, float32 `value`) at `step`. */
  addScalar(tag: string, value: number, step: number): void {
    this.writeEvent({ wallTime: this.now(), step, summary: { value: [{ tag, simpleValue: value }] } });
  }

  /** Flushes to disk. */
  flush(): void {
    if (this.fd >= 0) fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd < 0) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
  }
}
