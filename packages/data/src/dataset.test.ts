import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readNpy } from '@pfc/core';
import { FolderFaceDataset, RecordFaceDataset, openFaceDataset } from './dataset';
import { decodeImage, decodeImageJs, encodePng } from './image';
import { RecordIOReader, RecordIOWriter } from './recordio';
import { FaceRecWriter, packFolder, unpackRec, verifyRec } from './tools';
import { packRecord } from './irheader';
import { synthIdentityImage } from './synth';

const shared = join(__dirname, '../../../../shared');
const fixtures = join(shared, 'fixtures');
const realdata = join(shared, 'realdata', 'recordio');
const tFix = existsSync(join(fixtures, 'manifest.json')) ? it : it.skip;
const tReal = existsSync(realdata) ? it : it.skip;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pfc-dataset-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('RecordFaceDataset on fixtures', () => {
  tFix('finds the InsightFace header, image keys 1…6 and the peer labels', () => {
    const m = JSON.parse(readFileSync(join(fixtures, 'manifest.json'), 'utf8')).recordio;
    const ds = new RecordFaceDataset(join(fixtures, 'rec'));
    expect(ds.layout).toBe('insightface-header');
    expect(ds.headerRange).toEqual(m.peer_header0);
    expect(ds.imageKeys).toEqual(m.peer_imgidx);
    expect(ds.numClasses).toBe(3);
    expect(Array.from({ length: ds.length }, (_, i) => ds.read(i).label)).toEqual(m.peer_labels);
    expect(ds.identities()).toEqual([
      { key: 7, start: 1, end: 3 },
      { key: 8, start: 3, end: 5 },
      { key: 9, start: 5, end: 7 },
    ]);
    ds.close();
  });

  tFix('decodes every image (including the split record) to the PIL pixels exactly with sharp', async () => {
    const ref = readNpy(join(fixtures, 'decoded_rgb_pil.npy'));
    expect(ref.shape).toEqual([6, 112, 112, 3]);
    const refData = ref.data as Uint8Array;
    const ds = new RecordFaceDataset(join(fixtures, 'rec'));
    for (let i = 0; i < 6; i++) {
      const s = ds.read(i);
      const img = await decodeImage(s.image, s.where, 'sharp');
      expect([img.height, img.width]).toEqual([112, 112]);
      // sharp decodes with libjpeg-turbo like PIL: tolerance 0 levels
      let max = 0;
      for (let j = 0; j < img.data.length; j++) max = Math.max(max, Math.abs(img.data[j]! - refData[i * 37632 + j]!));
      expect(max).toBe(0);
      // the pure-JS fallback differs in chroma upsampling and IDCT rounding: mean |diff| ≤ 3 levels, max ≤ 64
      const js = decodeImageJs(s.image, s.where);
      let sum = 0;
      let jmax = 0;
      for (let j = 0; j < js.data.length; j++) {
        const d = Math.abs(js.data[j]! - refData[i * 37632 + j]!);
        sum += d;
        jmax = Math.max(jmax, d);
      }
      expect(sum / js.data.length).toBeLessThanOrEqual(3);
      expect(jmax).toBeLessThanOrEqual(64);
    }
    ds.close();
  });

  tFix('rec_arraylabel: header first, vector labels read as label[0]; strict mode rejects them', () => {
    const ds = new RecordFaceDataset(join(fixtures, 'rec_arraylabel'));
    expect(ds.layout).toBe('insightface-header');
    expect(ds.imageKeys).toEqual([1, 2]);
    expect([ds.read(0).label, ds.read(1).label]).toEqual([0, 1]);
    ds.close();
    const strict = new RecordFaceDataset(join(fixtures, 'rec_arraylabel'), { labelArray: 'error' });
    expect(() => strict.read(0)).toThrow(expect.objectContaining({ code: 'E_LABEL_SCALAR', message: expect.stringMatching(/train\.rec key 1 at byte offset 40/) }));
    strict.close();
  });

  tFix("writing the fixture's images and labels through FaceRecWriter reproduces its .rec and .idx byte for byte", () => {
    const ds = new RecordFaceDataset(join(fixtures, 'rec'));
    const prefix = join(dir, 'fixwrite', 'train');
    mkdirSync(join(dir, 'fixwrite'));
    const w = new FaceRecWriter(prefix);
    for (let i = 0; i < ds.length; i++) {
      const s = ds.read(i);
      w.add(s.label, s.image);
    }
    ds.close();
    expect(w.close()).toMatchObject({ images: 6, identities: 3, bytes: 20612 });
    // includes the split record (image 3 holds the magic word twice) and the header record written last
    expect(readFileSync(`${prefix}.rec`).equals(readFileSync(join(fixtures, 'rec', 'train.rec')))).toBe(true);
    expect(readFileSync(`${prefix}.idx`, 'utf8')).toBe(readFileSync(join(fixtures, 'rec', 'train.idx'), 'utf8'));
  });

  tFix('unpack → pack of the fixture (the pfc-data pack path) reproduces its .rec, .idx and property byte for byte', async () => {
    const folder = join(dir, 'fixunpack');
    expect(unpackRec(join(fixtures, 'rec', 'train.rec'), folder)).toBe(6);
    const out = join(dir, 'fixpack');
    mkdirSync(out);
    await packFolder(folder, join(out, 'train'), { progress: null });
    for (const f of ['train.rec', 'train.idx', 'property']) {
      expect(readFileSync(join(out, f)).equals(readFileSync(join(fixtures, 'rec', f)))).toBe(true);
    }
  });
});

describe('RecordFaceDataset on files written by mxnet im2rec', () => {
  tReal('reads every record with the labels of the .lst, plain im2rec layout', async () => {
    for (const name of ['adaface_train', 'faceid_processing_validation']) {
      const lst = readFileSync(join(realdata, `${name}.lst`), 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split('\t'));
      const ds = new RecordFaceDataset(join(realdata, `${name}.rec`));
      expect(ds.layout).toBe('im2rec');
      expect(ds.length).toBe(lst.length);
      const want = new Map(lst.map((f) => [Number(f[0]), Number(f[1])]));
      for (let i = 0; i < ds.length; i++) {
        const s = ds.read(i);
        expect(s.label).toBe(want.get(s.key as number));
      }
      // every image decodes to 112x112 RGB
      const sizes = new Map<string, number>();
      for (let i = 0; i < ds.length; i++) {
        const s = ds.read(i);
        const img = await decodeImage(s.image, s.where);
        const size = `${img.width}x${img.height}x${img.data.length / (img.width * img.height)}`;
        sizes.set(size, (sizes.get(size) ?? 0) + 1);
      }
      expect(Object.fromEntries(sizes)).toEqual({ '112x112x3': lst.length });
      ds.close();
    }
    const withProp = new RecordFaceDataset(join(realdata, 'faceid_processing_validation.rec'));
    expect(withProp.numClasses).toBe(null); // its property file has another stem: classes are not guessed
    withProp.close();
  });
});

function makeFolder(root: string, classes: number, per: number): void {
  for (let c = 0; c < classes; c++) {
    mkdirSync(join(root, `id_${String(c).padStart(2, '0')}`), { recursive: true });
    for (let j = 0; j < per; j++) {
      const img = synthIdentityImage(1000 + c, j);
      writeFileSync(join(root, `id_${String(c).padStart(2, '0')}`, `${j}.png`), encodePng(img));
    }
  }
}

describe('folder datasets and pack/unpack', () => {
  it('FolderFaceDataset numbers sorted sub-folders as ImageFolder', () => {
    const root = join(dir, 'folder');
    makeFolder(root, 3, 2);
    mkdirSync(join(root, 'id_99_empty'));
    writeFileSync(join(root, 'id_00', 'notes.txt'), 'x');
    const ds = new FolderFaceDataset(root);
    expect(ds.classes).toEqual(['id_00', 'id_01', 'id_02', 'id_99_empty']);
    expect(ds.length).toBe(6);
    expect([...ds.labels]).toEqual([0, 0, 1, 1, 2, 2]);
    expect(ds.read(2).key).toBe('id_01/0.png');
    expect(openFaceDataset(root)).toBeInstanceOf(FolderFaceDataset);
    expect(() => new FolderFaceDataset(join(dir, 'nope'))).toThrow(expect.objectContaining({ code: 'E_DATASET_OPEN' }));
  });

  it('pack → read round trip is byte-identical on image payloads; unpack writes them back', async () => {
    const root = join(dir, 'packsrc');
    makeFolder(root, 4, 3);
    const res = await packFolder(root, join(dir, 'train'), { progress: null });
    expect(res).toMatchObject({ images: 12, identities: 4 });
    expect(readFileSync(join(dir, 'property'), 'utf8')).toBe('4,112,112\n');
    const src = new FolderFaceDataset(root);
    const ds = openFaceDataset(dir) as RecordFaceDataset;
    expect(ds.layout).toBe('insightface-header');
    expect(ds.numClasses).toBe(4);
    for (let i = 0; i < src.length; i++) {
      const a = src.read(i);
      const b = ds.read(i);
      expect(b.label).toBe(a.label);
      expect(Buffer.compare(Buffer.from(b.image), Buffer.from(a.image))).toBe(0);
    }
    ds.close();
    const out = join(dir, 'unpacked');
    expect(unpackRec(join(dir, 'train.rec'), out)).toBe(12);
    expect(readdirSync(out).sort()).toEqual(['0', '1', '2', '3']);
    expect(readFileSync(join(out, '1', '4.png')).equals(readFileSync(join(root, 'id_01', '0.png')))).toBe(true);
  });

  it('FaceRecWriter rejects a class after a higher one or a class that comes back', () => {
    const w = new FaceRecWriter(join(dir, 'order'));
    w.add(0, Buffer.alloc(4));
    w.add(2, Buffer.alloc(4));
    expect(() => w.add(1, Buffer.alloc(4))).toThrow(expect.objectContaining({ code: 'E_LABEL_ORDER', message: expect.stringContaining('class 1 follows class 2') }));
    expect(() => w.add(0, Buffer.alloc(4))).toThrow(expect.objectContaining({ code: 'E_LABEL_ORDER' }));
    expect(() => w.close(2)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' })); // 3 classes were written
    w.close();
  });

  it('a pack that fails on an undecodable image writes nothing and leaves the previous .rec/.idx as they were', async () => {
    const root = join(dir, 'will-fail');
    mkdirSync(join(root, 'id_a'), { recursive: true });
    writeFileSync(join(root, 'id_a', '0.png'), encodePng(synthIdentityImage(3, 0, { size: 16 })));
    const prefix = join(dir, 'kept', 'train');
    await packFolder(root, prefix);
    const before = [readFileSync(`${prefix}.rec`), readFileSync(`${prefix}.idx`)];
    writeFileSync(join(root, 'id_a', '1.png'), Buffer.from('not an image'));
    await expect(packFolder(root, prefix)).rejects.toMatchObject({ code: 'E_IMAGE_DECODE', message: expect.stringContaining('1.png') });
    expect(readFileSync(`${prefix}.rec`).equals(before[0]!)).toBe(true);
    expect(readFileSync(`${prefix}.idx`).equals(before[1]!)).toBe(true);
    expect(readdirSync(join(dir, 'kept')).sort()).toEqual(['property', 'train.idx', 'train.rec']);
  });

  it('packFolder keeps an empty identity folder as an identity with no image, and creates the output folder', async () => {
    const root = join(dir, 'with-empty');
    // id_a: 2 images, id_b: none, id_c: 1 image, id_d: none (the last class is empty too)
    for (const [c, n] of [['id_a', 2], ['id_b', 0], ['id_c', 1], ['id_d', 0]] as const) {
      mkdirSync(join(root, c), { recursive: true });
      for (let j = 0; j < n; j++) writeFileSync(join(root, c, `${j}.png`), encodePng(synthIdentityImage(11 + c.charCodeAt(3), j, { size: 16 })));
    }
    const prefix = join(dir, 'not', 'yet', 'there', 'train');
    const res = await packFolder(root, prefix);
    expect(res).toMatchObject({ images: 3, identities: 4, emptyIdentities: 2 });
    expect(readFileSync(join(dir, 'not', 'yet', 'there', 'property'), 'utf8')).toBe('4,16,16\n');
    const ds = new RecordFaceDataset(`${prefix}.rec`);
    expect(ds.layout).toBe('insightface-header');
    expect(ds.numClasses).toBe(4);
    // labels are the sorted folder indices, as FolderFaceDataset (ImageFolder) gives them
    expect(Array.from({ length: ds.length }, (_, i) => ds.read(i).label)).toEqual([0, 0, 2]);
    expect(Array.from({ length: ds.length }, (_, i) => ds.read(i).label)).toEqual(Array.from(new FolderFaceDataset(root).labels));
    const ranges = ds.identities()!.map(({ start, end }) => end - start);
    expect(ranges).toEqual([2, 0, 1, 0]);
    ds.close();
    const report = await verifyRec(`${prefix}.rec`);
    expect(report.problems).toEqual([]);
  });

  it('reads a header-layout rec without its .idx by scanning', () => {
    const w = new FaceRecWriter(join(dir, 'noidx'));
    w.add(0, Buffer.from([1]));
    w.add(1, Buffer.from([2]));
    w.close();
    rmSync(join(dir, 'noidx.idx'));
    const ds = new RecordFaceDataset(join(dir, 'noidx.rec'));
    expect(ds.reader.indexed).toBe(false);
    expect(ds.layout).toBe('insightface-header');
    expect([ds.read(0).label, ds.read(1).label]).toEqual([0, 1]);
    ds.close();
    const r = new RecordIOReader(join(dir, 'noidx.rec'));
    expect(r.keys).toEqual([1, 2, 3, 4, 0]);
    r.close();
  });

  it('a class beyond the header count is E_LABEL_RANGE in the dataset and in verify', async () => {
    const rec = join(dir, 'range.rec');
    const w = new RecordIOWriter(rec);
    const png = encodePng(synthIdentityImage(1, 0));
    w.write(0, packRecord({ label: [3, 4], id: 0, id2: 1 }));
    w.write(1, packRecord({ label: 0, id: 1 }, png));
    const off = w.write(2, packRecord({ label: 5, id: 2 }, png));
    w.write(3, packRecord({ label: [1, 3], id: 3 }));
    w.close();
    const ds = new RecordFaceDataset(rec);
    expect(ds.numClasses).toBe(1);
    expect(ds.read(0).label).toBe(0);
    expect(() => ds.read(1)).toThrow(expect.objectContaining({ code: 'E_LABEL_RANGE', message: expect.stringContaining(`key 2 at byte offset ${off}`) }));
    ds.close();
    const report = await verifyRec(rec);
    expect(report.problems.map((p) => [p.key, p.code, p.offset])).toEqual([[2, 'E_LABEL_RANGE', off]]);
  });
});
