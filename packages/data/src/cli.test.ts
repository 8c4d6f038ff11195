import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Progress } from '@pfc/core';
import { main } from './cli';
import { encodeJpegJs, encodePng } from './image';
import { packRecord } from './irheader';
import { RecordIOWriter } from './recordio';
import { synthIdentityImage } from './synth';
import { packFolder } from './tools';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pfc-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s), progress: false });
  return { code, out, err };
}

describe('pfc-data', () => {
  it('synth → inspect → verify → index → unpack', async () => {
    const prefix = join(dir, 'train');
    let r = await run('synth', prefix, '--identities', '3', '--per-identity', '4', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ images: 12, identities: 3 });
    r = await run('inspect', `${prefix}.rec`, '--json');
    const info = JSON.parse(r.out);
    expect(info).toMatchObject({ layout: 'insightface-header', records: 16, images: 12, numClasses: 3, classesSeen: 3 });
    expect(info.imagesPerIdentity).toEqual({ min: 4, max: 4, mean: 4, histogram: { '4-7': 3 } });
    expect(info.firstImage).toEqual({ format: 'jpeg', width: 112, height: 112 });
    r = await run('inspect', `${prefix}.rec`);
    expect(r.out).toContain('InsightFace (header record 0)');
    r = await run('verify', `${prefix}.rec`, '--size', '112x112');
    expect(r.code).toBe(0);
    expect(r.out).toContain('0 problem(s)');
    const idx = readFileSync(`${prefix}.idx`, 'utf8');
    rmSync(`${prefix}.idx`);
    r = await run('index', `${prefix}.rec`);
    expect(r.code).toBe(0);
    expect(readFileSync(`${prefix}.idx`, 'utf8')).toBe(idx);
    r = await run('unpack', `${prefix}.rec`, join(dir, 'out'));
    expect(r.out).toContain('wrote 12 images');
    expect(existsSync(join(dir, 'out', '2', '12.jpg'))).toBe(true);
  });

  it('pack packs a folder; verify lists every bad record and exits 1', async () => {
    const src = join(dir, 'faces');
    for (const [c, name] of ['alice', 'bob'].entries()) {
      mkdirSync(join(src, name), { recursive: true });
      for (let j = 0; j < 3; j++) writeFileSync(join(src, name, `${j}.png`), encodePng(synthIdentityImage(c, j)));
    }
    let r = await run('pack', src, join(dir, 'packed'), '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ images: 6, identities: 2 });
    // damage: an undecodable image (key 2) and a wrong magic (key 5)
    const rec = join(dir, 'packed.rec');
    const bytes = readFileSync(rec);
    const offsets = new Map(readFileSync(join(dir, 'packed.idx'), 'utf8').trim().split('\n').map((l) => l.split('\t').map(Number) as [number, number]));
    bytes.fill(0x11, offsets.get(2)! + 8 + 24, offsets.get(2)! + 8 + 40);
    bytes.writeUInt32LE(0, offsets.get(5)!);
    writeFileSync(rec, bytes);
    r = await run('verify', rec, '--json');
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.out);
    expect(rep.problems.map((p: { key: number; code: string; offset: number }) => [p.key, p.code, p.offset])).toEqual([
      [2, 'E_IMAGE_DECODE', offsets.get(2)],
      [5, 'E_RECORDIO_MAGIC', offsets.get(5)],
    ]);
    r = await run('verify', rec);
    expect(r.out).toMatch(/E_IMAGE_DECODE\tkey 2\toffset \d+/);
  });

  it('verify lists wrong magic, truncation, .idx past the end, undecodable image and label array together', async () => {
    const rec = join(dir, 'plain.rec');
    const w = new RecordIOWriter(rec);
    const offsets: number[] = [];
    for (let k = 0; k < 8; k++) {
      const jpeg = encodeJpegJs(synthIdentityImage(k, 0), 90);
      offsets.push(w.write(k, packRecord(k === 2 ? { label: [1, 0], id: k } : { label: k % 2, id: k }, jpeg)));
    }
    w.close();
    const bytes = readFileSync(rec);
    bytes.fill(0x11, offsets[4]! + 8 + 24 + 2, offsets[4]! + 8 + 24 + 20); // key 4: JPEG header destroyed
    bytes.writeUInt32LE(0x12345678, offsets[5]!); // key 5: wrong magic
    writeFileSync(rec, bytes.subarray(0, offsets[6]! + 100)); // key 6 truncated, key 7 past the end
    const r = await run('verify', rec, '--json');
    expect(r.code).toBe(1);
    const got = JSON.parse(r.out).problems.map((p: { key: number; code: string; offset: number }) => [p.key, p.code, p.offset]);
    expect(got).toEqual([
      [2, 'E_LABEL_SCALAR', offsets[2]],
      [4, 'E_IMAGE_DECODE', offsets[4]],
      [5, 'E_RECORDIO_MAGIC', offsets[5]],
      [6, 'E_RECORDIO_TRUNCATED', offsets[6]],
      [7, 'E_RECORDIO_IDX', offsets[7]],
    ]);
    for (const p of JSON.parse(r.out).problems) expect(p.message).toContain(String(p.offset));
  });

  it('reports usage errors with exit 2, PfcErrors with their code and exit 1', async () => {
    expect((await run('synth', join(dir, 'x'), '--identities', '0', '--per-identity', '2')).code).toBe(2);
    const r = await run('inspect', join(dir, 'missing.rec'));
    expect(r.code).toBe(1);
    expect(r.err).toContain('E_RECORDIO_OPEN');
    // verify of a missing file: one problem, naming it, exit 1
    const v = await run('verify', join(dir, 'missing.rec'), '--json');
    expect(v.code).toBe(1);
    const problems = JSON.parse(v.out).problems as { code: string; message: string }[];
    expect(problems.map((p) => p.code)).toEqual(['E_RECORDIO_OPEN']);
    expect(problems[0]!.message).toContain(join(dir, 'missing.rec'));
  });

  const commands = ['', 'pack', 'inspect', 'verify', 'index', 'synth', 'unpack'].map((c) => `pfc-data ${c}`.trim());
  it.each(commands)('%s --help prints usage and an example of itself, exit 0', async (name) => {
    const h = await run(...name.split(' ').slice(1), '--help');
    expect(h.code).toBe(0);
    expect(h.err).toBe('');
    expect(h.out.startsWith(`Usage: ${name} `)).toBe(true);
    // an example of this very command, after the heading
    const examples = h.out.split('\nExamples:\n')[1];
    expect(examples).toBeDefined();
    expect(examples).toMatch(new RegExp(`^  \\$ ${name} \\S`, 'm'));
  });
});

describe('pack progress', () => {
  it('prints a plain line per image with count, percent and rate on a non-TTY stream', async () => {
    const src = join(dir, 'progress-faces');
    for (const name of ['a', 'b']) {
      mkdirSync(join(src, name), { recursive: true });
      for (let j = 0; j < 3; j++) writeFileSync(join(src, name, `${j}.png`), encodePng(synthIdentityImage(name.charCodeAt(0), j)));
    }
    let text = '';
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        text += chunk.toString();
        done();
      },
    });
    expect((stream as { isTTY?: boolean }).isTTY).toBeUndefined(); // so Progress prints lines, not a redrawn bar
    // intervalMs 0: a line for every tick instead of one per 2 s
    const progress = new Progress({ total: 6, label: 'pack', unit: 'img', stream, intervalMs: 0 });
    const res = await packFolder(src, join(dir, 'progress'), { progress });
    expect(res.images).toBe(6);
    const lines = text.split('\n');
    expect(lines.pop()).toBe(''); // every line ends with a newline
    expect(text).not.toContain('\r'); // no bar redraws
    expect(lines.map((l) => l.replace(/ [\d.]+ img\/s.*$/, ''))).toEqual([
      'pack 1/6 (16.7%)',
      'pack 2/6 (33.3%)',
      'pack 3/6 (50.0%)',
      'pack 4/6 (66.7%)',
      'pack 5/6 (83.3%)',
      'pack 6/6 (100.0%)',
    ]);
    for (const l of lines) expect(l).toMatch(/^pack \d\/6 \(\d+\.\d%\) \d+\.\d img\/s( ETA \S+)?$/);
  });
});
