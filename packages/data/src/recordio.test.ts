import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import { RECORDIO_MAGIC, RecordIOReader, RecordIOWriter, encodeRecord, formatIdx, parseIdx, scanRecordOffsets } from './recordio';
import { classOf, packRecord, unpackRecord } from './irheader';

const shared = join(__dirname, '../../../../shared');
const fixtures = join(shared, 'fixtures');
const manifestPath = join(fixtures, 'manifest.json');
const haveFixtures = existsSync(manifestPath);

interface ManifestRecord {
  key: number;
  offset: number;
  kind: string;
  label: number | number[];
  flag: number;
  id: number;
  id2: number;
  payload_len: number;
  split_parts: number;
}

function manifest(): { recordio: { files: { rec_bytes: number; idx: string }; records: ManifestRecord[] }; recordio_arraylabel: { files: { rec_bytes: number; idx: string }; records: ManifestRecord[] } } {
  return JSON.parse(readFileSync(manifestPath, 'utf8'));
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pfc-recordio-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MAGIC = [0x0a, 0x23, 0xd7, 0xce];

describe('encodeRecord (dmlc WriteRecord)', () => {
  it('writes magic, lrecord and zero padding to 4 bytes', () => {
    const { bytes, parts } = encodeRecord(Uint8Array.from([1, 2, 3, 4, 5]));
    expect(parts).toBe(1);
    expect([...bytes]).toEqual([...MAGIC, 5, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0]);
  });

  it('splits at an aligned magic word with cflag 1 and 3 and drops the magic bytes', () => {
    const payload = Uint8Array.from([9, 9, 9, 9, ...MAGIC, 7, 7]);
    const { bytes, parts } = encodeRecord(payload);
    expect(parts).toBe(2);
    // part 1: cflag 1, length 4; part 2: cflag 3, length 2, padded
    expect([...bytes]).toEqual([...MAGIC, 4, 0, 0, 0x20, 9, 9, 9, 9, ...MAGIC, 2, 0, 0, 0x60, 7, 7, 0, 0]);
  });

  it('does not split at an unaligned magic word', () => {
    const payload = Uint8Array.from([1, ...MAGIC, 2, 3, 4]);
    expect(encodeRecord(payload).parts).toBe(1);
  });

  it('writes an empty first part when the payload starts with the magic, and cflag 2 for middle parts', () => {
    const payload = Uint8Array.from([...MAGIC, 1, 2, 3, 4, ...MAGIC]);
    const { bytes, parts } = encodeRecord(payload);
    expect(parts).toBe(3);
    expect([...bytes]).toEqual([...MAGIC, 0, 0, 0, 0x20, ...MAGIC, 4, 0, 0, 0x40, 1, 2, 3, 4, ...MAGIC, 0, 0, 0, 0x60]);
  });

  it('round-trips payloads with magic words through the reader', () => {
    const path = join(dir, 'split.rec');
    const w = new RecordIOWriter(path);
    const payloads = [
      Uint8Array.from([...MAGIC]),
      Uint8Array.from([...MAGIC, ...MAGIC, ...MAGIC, 1]),
      Uint8Array.from([]),
      Uint8Array.from([5, 6, 7, ...MAGIC]),
      Uint8Array.from([5, 6, 7, 8, ...MAGIC, 0, ...MAGIC]),
    ];
    payloads.forEach((p, i) => w.write(i + 10, p));
    w.close();
    const r = new RecordIOReader(path);
    expect(r.keys).toEqual([10, 11, 12, 13, 14]);
    payloads.forEach((p, i) => expect([...r.read(i + 10)]).toEqual([...p]));
    expect([...r.scan()].map((x) => [...x.payload])).toEqual(payloads.map((p) => [...p]));
    r.close();
  });
});

describe('.idx', () => {
  it('parses and formats key<TAB>offset', () => {
    const { keys, offsets } = parseIdx('1\t0\n2\t3260\n0\t20572\n');
    expect(keys).toEqual([1, 2, 0]);
    expect(offsets.get(0)).toBe(20572);
    expect(formatIdx(keys.map((k) => [k, offsets.get(k)!] as const))).toBe('1\t0\n2\t3260\n0\t20572\n');
  });

  it('rejects a malformed line with its line number', () => {
    expect(() => parseIdx('1\t0\nxx\n', 'a.idx')).toThrow(/a\.idx line 2: expected 'key<TAB>offset', got "xx"/);
    expect(() => parseIdx('1\t0\n\n3\t\n', 'a.idx')).toThrow(/line 3/);
    expect(() => parseIdx('1\t0 7\n', 'a.idx')).toThrow(/line 1/);
  });

  it('accepts CRLF, spaces and blank lines; a repeated key keeps its first place and last offset', () => {
    const { keys, offsets } = parseIdx('5 0\r\n\n  7\t12\r\n5\t40\n-1\t8');
    expect(keys).toEqual([5, 7, -1]);
    expect([...offsets.entries()]).toEqual([[5, 40], [7, 12], [-1, 8]]);
  });

  it('looks up sparse and dense keys alike', () => {
    const path = join(dir, 'sparse.rec');
    const w = new RecordIOWriter(path);
    const keys = [1e9, 3, 0, 123456];
    keys.forEach((k, i) => w.write(k, Uint8Array.from([i])));
    w.close();
    const r = new RecordIOReader(path);
    keys.forEach((k, i) => expect([...r.read(k)]).toEqual([i]));
    expect(r.has(4)).toBe(false);
    expect(r.has(-1)).toBe(false);
    r.close();
  });
});

describe('IRHeader', () => {
  it('packs a scalar label with flag 0 and a vector with flag = length', () => {
    const s = packRecord({ label: 3, id: 7 }, Uint8Array.from([1, 2]));
    expect(s.length).toBe(26);
    const u = unpackRecord(s);
    expect(u.header).toEqual({ flag: 0, label: 3, labels: null, id: 7, id2: 0 });
    expect([...u.image]).toEqual([1, 2]);
    const v = unpackRecord(packRecord({ label: [5, 9], id: 0, id2: 1 }));
    expect(v.header.flag).toBe(2);
    expect(v.header.label).toBe(0);
    expect([...v.header.labels!]).toEqual([5, 9]);
    expect(v.image.length).toBe(0);
    expect(classOf(v.header)).toBe(5);
  });

  it('throws E_RECORDIO_HEADER naming file, key and offset for a payload shorter than its header', () => {
    // labels announced by the flag but cut off: 30 bytes hold 1.5 of the 3 float32 labels
    const p = packRecord({ label: [1, 2, 3] }).subarray(0, 30);
    expect(() => unpackRecord(p, { file: 'x.rec', key: 4, offset: 96 })).toThrow(PfcError);
    expect(() => unpackRecord(p, { file: 'x.rec', key: 4, offset: 96 })).toThrow(
      expect.objectContaining({
        code: 'E_RECORDIO_HEADER',
        message: expect.stringContaining('x.rec key 4 at byte offset 96: flag 3 announces 3 float32 labels'),
        details: expect.objectContaining({ file: 'x.rec', key: 4, offset: 96, flag: 3, length: 30 }),
      }),
    );
    // shorter than the 24-byte IRHeader itself
    expect(() => unpackRecord(Buffer.alloc(10), { file: 'y.rec', key: 1, offset: 8 })).toThrow(PfcError);
    expect(() => unpackRecord(Buffer.alloc(10), { file: 'y.rec', key: 1, offset: 8 })).toThrow(
      expect.objectContaining({
        code: 'E_RECORDIO_HEADER',
        message: expect.stringContaining('y.rec key 1 at byte offset 8: payload of 10 bytes is shorter than the 24-byte IRHeader'),
        details: expect.objectContaining({ file: 'y.rec', key: 1, offset: 8, length: 10 }),
      }),
    );
    // exactly the header (and exactly the announced labels) is not short
    expect(unpackRecord(Buffer.alloc(24)).image.length).toBe(0);
    expect([...unpackRecord(packRecord({ label: [1, 2, 3] })).header.labels!]).toEqual([1, 2, 3]);
  });

  it('rejects a label array where a scalar is required, and non-integer classes', () => {
    const h = unpackRecord(packRecord({ label: [1, 0] })).header;
    expect(() => classOf(h, { file: 'a.rec', key: 3, offset: 40 }, true)).toThrow(
      expect.objectContaining({ code: 'E_LABEL_SCALAR', message: expect.stringMatching(/a\.rec key 3 at byte offset 40/) }),
    );
    expect(() => classOf(unpackRecord(packRecord({ label: 1.5 })).header)).toThrow(expect.objectContaining({ code: 'E_LABEL_RANGE' }));
    expect(() => classOf(unpackRecord(packRecord({ label: -1 })).header)).toThrow(expect.objectContaining({ code: 'E_LABEL_RANGE' }));
  });
});

describe('fixtures/rec (written by mxnet + dmlc-core)', () => {
  const t = haveFixtures ? it : it.skip;

  t('reads every record with the manifest header fields, lengths and split parts', () => {
    for (const name of ['rec', 'rec_arraylabel'] as const) {
      const m = manifest()[name === 'rec' ? 'recordio' : 'recordio_arraylabel'];
      const r = new RecordIOReader(join(fixtures, name, 'train.rec'));
      expect(r.indexed).toBe(true);
      expect(r.fileSize).toBe(m.files.rec_bytes);
      expect(r.keys).toEqual(m.records.map((x) => x.key));
      for (const rec of m.records) {
        expect(r.offsetOf(rec.key)).toBe(rec.offset);
        const raw = r.readRecord(rec.key);
        expect(raw.payload.length).toBe(rec.payload_len);
        expect(raw.parts).toBe(rec.split_parts);
        const { header } = unpackRecord(raw.payload);
        expect(header.flag).toBe(rec.flag);
        expect(header.id).toBe(rec.id);
        expect(header.id2).toBe(rec.id2);
        if (Array.isArray(rec.label)) expect([...header.labels!]).toEqual(rec.label);
        else expect(header.label).toBe(rec.label);
      }
      r.close();
    }
  });

  t('scans without the .idx: same records, keys from the IRHeader ids', () => {
    const m = manifest().recordio;
    const r = new RecordIOReader(join(fixtures, 'rec', 'train.rec'), { idx: null });
    expect(r.indexed).toBe(false);
    expect(r.keys).toEqual(m.records.map((x) => x.key));
    for (const rec of m.records) expect(r.offsetOf(rec.key)).toBe(rec.offset);
    r.close();
  });

  t("rewriting the fixture's payloads reproduces the .rec and .idx byte for byte", () => {
    for (const name of ['rec', 'rec_arraylabel']) {
      const src = new RecordIOReader(join(fixtures, name, 'train.rec'));
      const out = join(dir, `${name}.rec`);
      const w = new RecordIOWriter(out);
      for (const k of src.keys) w.write(k, src.read(k));
      w.close();
      src.close();
      expect(readFileSync(out).equals(readFileSync(join(fixtures, name, 'train.rec')))).toBe(true);
      expect(readFileSync(join(dir, `${name}.idx`), 'utf8')).toBe(readFileSync(join(fixtures, name, 'train.idx'), 'utf8'));
    }
  });

  t('the split record is stored as 3 physical parts (cflag 1, 2, 3) at the manifest offset', () => {
    const bytes = readFileSync(join(fixtures, 'rec', 'train.rec'));
    const rec = manifest().recordio.records.find((x) => x.split_parts === 3)!;
    let pos = rec.offset;
    const flags: number[] = [];
    for (let i = 0; i < 3; i++) {
      expect(bytes.readUInt32LE(pos)).toBe(RECORDIO_MAGIC);
      const l = bytes.readUInt32LE(pos + 4);
      flags.push(l >>> 29);
      pos += 8 + (((l & (2 ** 29 - 1)) + 3) & ~3);
    }
    expect(flags).toEqual([1, 2, 3]);
  });
});

describe('damaged files', () => {
  function makeRec(name: string): string {
    const path = join(dir, `${name}.rec`);
    const w = new RecordIOWriter(path);
    w.write(0, packRecord({ label: 0, id: 0 }, Buffer.alloc(40, 1)));
    w.write(1, packRecord({ label: 1, id: 1 }, Buffer.alloc(40, 2)));
    w.write(2, packRecord({ label: 2, id: 2 }, Buffer.alloc(40, 3)));
    w.close();
    return path;
  }

  it('wrong magic: E_RECORDIO_MAGIC naming file, key and offset', () => {
    const path = makeRec('badmagic');
    const b = readFileSync(path);
    b[72] = 0; // second record's magic (each record: 8 + 64 bytes)
    writeFileSync(path, b);
    const r = new RecordIOReader(path);
    expect(() => r.read(1)).toThrow(expect.objectContaining({ code: 'E_RECORDIO_MAGIC', message: expect.stringContaining(`${path} key 1 at byte offset 72`) }));
    expect(r.read(2).length).toBe(64);
    r.close();
    expect(() => new RecordIOReader(path, { idx: null })).toThrow(expect.objectContaining({ code: 'E_RECORDIO_MAGIC' }));
    const scan = scanRecordOffsets(path);
    expect(scan.entries).toEqual([[0, 0]]);
    expect(scan.error?.details).toMatchObject({ offset: 72 });
  });

  it('truncated file: E_RECORDIO_TRUNCATED naming the record offset', () => {
    const path = makeRec('trunc');
    truncateSync(path, 72 * 2 + 30);
    const r = new RecordIOReader(path);
    expect(r.read(1).length).toBe(64);
    expect(() => r.read(2)).toThrow(expect.objectContaining({ code: 'E_RECORDIO_TRUNCATED', message: expect.stringMatching(/key 2 at byte offset 144/) }));
    r.close();
  });

  it('.idx offset past the end: E_RECORDIO_IDX naming key and offset', () => {
    const path = makeRec('idxpast');
    writeFileSync(path.replace(/\.rec$/, '.idx'), '0\t0\n1\t72\n2\t99999\n');
    expect(() => new RecordIOReader(path)).toThrow(
      expect.objectContaining({ code: 'E_RECORDIO_IDX', message: expect.stringMatching(/key 2 has byte offset 99999/) }),
    );
    const lenient = new RecordIOReader(path, { badIndex: 'drop' });
    expect(lenient.keys).toEqual([0, 1]);
    expect(lenient.badIndexEntries.map((e) => e.details.key)).toEqual([2]);
    lenient.close();
  });

  it('.idx offset not at a record start: E_RECORDIO_MAGIC', () => {
    const path = makeRec('idxmid');
    writeFileSync(path.replace(/\.rec$/, '.idx'), '0\t0\n1\t76\n');
    const r = new RecordIOReader(path);
    expect(() => r.read(1)).toThrow(expect.objectContaining({ code: 'E_RECORDIO_MAGIC' }));
    expect(() => r.read(5)).toThrow(expect.objectContaining({ code: 'E_RECORDIO_KEY' }));
    r.close();
  });

  it('rejects duplicate keys on write and a missing explicit .idx', () => {
    const w = new RecordIOWriter(join(dir, 'dup.rec'));
    w.write(1, Buffer.alloc(4));
    expect(() => w.write(1, Buffer.alloc(4))).toThrow(expect.objectContaining({ code: 'E_RECORDIO_KEY' }));
    w.close();
    expect(() => new RecordIOReader(join(dir, 'dup.rec'), { idx: join(dir, 'none.idx') })).toThrow(expect.objectContaining({ code: 'E_RECORDIO_OPEN' }));
    expect(() => new RecordIOReader(join(dir, 'missing.rec'))).toThrow(expect.objectContaining({ code: 'E_RECORDIO_OPEN' }));
  });
});
