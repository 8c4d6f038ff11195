import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as protobuf from 'protobufjs';
import { SummaryWriter, crc32c, decodeTfRecords, encodeTfRecord, maskedCrc32c, readEventFile } from './tensorboard';

/** The official messages (tensorflow/core/util/event.proto, framework/summary.proto), fields as published. */
const OFFICIAL = `
syntax = "proto3";
package tensorflow;
message SummaryMetadata { message PluginData { string plugin_name = 1; bytes content = 2; }
  PluginData plugin_data = 1; string display_name = 2; string summary_description = 3; }
message Summary {
  message Image { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }
  message Value {
    string node_name = 7; string tag = 1; SummaryMetadata metadata = 9;
    oneof value { float simple_value = 2; bytes obsolete_old_style_histogram = 3; Image image = 4; }
  }
  repeated Value value = 1;
}
message LogMessage { int32 level = 1; string message = 2; }
message SessionLog { int32 status = 1; string checkpoint_path = 2; string msg = 3; }
message Event {
  double wall_time = 1; int64 step = 2;
  oneof what { string file_version = 3; bytes graph_def = 4; Summary summary = 5; LogMessage log_message = 6;
    SessionLog session_log = 7; bytes tagged_run_metadata = 8; bytes meta_graph_def = 9; }
}`;

describe('CRC32C', () => {
  it('matches the published check values', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa); // RFC 3720 B.4
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
  });
  it('masks as TFRecord does', () => {
    const c = crc32c(new Uint8Array([1, 2, 3]));
    expect(maskedCrc32c(new Uint8Array([1, 2, 3]))).toBe(((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
  });
});

describe('TFRecord framing', () => {
  it('round-trips and detects corruption with the byte offset', () => {
    const a = encodeTfRecord(new Uint8Array([9, 8, 7]));
    const b = encodeTfRecord(new Uint8Array(0));
    const all = new Uint8Array([...a, ...b]);
    expect(decodeTfRecords(all).map((r) => Array.from(r))).toEqual([[9, 8, 7], []]);
    const bad = all.slice();
    bad[13] = bad[13]! ^ 1;
    expect(() => decodeTfRecords(bad, 'f')).toThrow(/f: data CRC mismatch at byte 15/);
    expect(() => decodeTfRecords(all.subarray(0, 10), 'f')).toThrow(/truncated record header at byte 0/);
  });
});

describe('SummaryWriter', () => {
  it('writes scalar events that parse with the official definitions', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-tb-'));
    const w = new SummaryWriter(dir, { now: () => 1700000000.5 });
    w.addScalar('loss', 12.5, 10);
    w.addScalar('learning_rate', 0.1, 10);
    w.addScalar('lfw', 0.9875, 2000);
    w.close();
    const bytes = new Uint8Array(readFileSync(w.path));
    const records = decodeTfRecords(bytes, w.path);
    expect(records).toHaveLength(4);
    const Event = protobuf.parse(OFFICIAL).root.lookupType('tensorflow.Event');
    const evs = records.map((r) => Event.toObject(Event.decode(r), { longs: Number }) as Record<string, any>);
    expect(evs[0]!.fileVersion).toBe('brain.Event:2');
    expect(evs[0]!.wallTime).toBe(1700000000.5);
    expect(evs[1]!.step).toBe(10);
    expect(evs[1]!.summary.value[0].tag).toBe('loss');
    expect(evs[1]!.summary.value[0].simpleValue).toBe(12.5);
    expect(evs[3]!.summary.value[0].simpleValue).toBeCloseTo(0.9875, 6); // float32 field
    const back = readEventFile(w.path);
    expect(back.fileVersion).toBe('brain.Event:2');
    expect(back.scalars.map((s) => [s.tag, s.step])).toEqual([['loss', 10], ['learning_rate', 10], ['lfw', 2000]]);
  });
  it('a file cut mid-record is reported, not misread', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-tb-'));
    const w = new SummaryWriter(dir);
    w.addScalar('loss', 1, 1);
    w.close();
    const bytes = readFileSync(w.path);
    const cut = join(dir, 'cut');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 3));
    expect(() => readEventFile(cut)).toThrow(/truncated record/);
  });
});
