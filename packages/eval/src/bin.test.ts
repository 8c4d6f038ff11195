import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { PfcError, readNpy } from '@pfc/core';
import { encodeVerificationBin, parseVerificationBin, readVerificationBin, writeVerificationBin } from './bin';
import { decodeImage } from './image';
import { parsePickle } from './pickle';
import { functionEmbedder } from './embed';
import { verifyBin } from './verify-bin';
import { maliciousPickles } from './testing.test-util';

const shared = join(__dirname, '../../../../shared');
const fixtures = join(shared, 'fixtures');
const realBin = join(shared, 'realdata/bin');

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const expectCode = (fn: () => unknown, code: string) => {
  try {
    fn();
  } catch (err) {
    expect(PfcError.is(err)).toBe(true);
    expect((err as PfcError).code).toBe(code);
    return err as PfcError;
  }
  throw new Error(`expected ${code}`);
};

describe('safe pickle subset', () => {
  it('refuses GLOBAL of os.system (protocol 2, GLOBAL + REDUCE) before calling anything', () => {
    // pickle.dumps(Evil(), 2) with __reduce__ = (os.system, ('echo pwned',))
    const evil = enc('\x80\x02cposix\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.');
    const err = expectCode(() => parsePickle(evil, 'evil.bin'), 'E_PICKLE_UNSAFE');
    expect(err.message).toContain("posix.system");
    expect(err.message).toContain('evil.bin');
    expect(err.details.offset).toBe(2);
  });

  it('refuses STACK_GLOBAL of builtins.eval (protocol 4)', () => {
    const evil = enc('\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x94\x85\x94R\x94.');
    expectCode(() => parseVerificationBin(evil, 'evil4.bin'), 'E_PICKLE_UNSAFE');
  });

  it('refuses calling a whitelisted class directly, an unsafe codec, and opcodes outside the subset', () => {
    // numpy.ndarray((3,)) via REDUCE: the class is only accepted as _reconstruct's argument
    expectCode(() => parsePickle(enc('\x80\x02cnumpy\nndarray\nK\x03\x85\x85R.')), 'E_PICKLE_UNSAFE');
    // _codecs.encode('x', 'rot13')
    expectCode(() => parsePickle(enc('\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.')), 'E_PICKLE_UNSAFE');
    // INST, OBJ, NEWOBJ, EMPTY_DICT (dicts are not needed by .bin files)
    for (const body of ['(iposix\nsystem\n.', '(cposix\nsystem\no.', '\x80\x02cnumpy\ndtype\n)\x81.', '\x80\x02}.']) {
      expectCode(() => parsePickle(enc(body)), 'E_PICKLE_UNSAFE');
    }
    // a REDUCE whose callable is a plain value
    expectCode(() => parsePickle(enc('\x80\x02K\x01)R.')), 'E_PICKLE_UNSAFE');
  });

  it('reports truncation and bad structure with E_PICKLE_FORMAT / E_BIN_FORMAT and the byte offset', () => {
    const err = expectCode(() => parsePickle(enc('\x80\x04B\xff\x00\x00\x00ab'), 't.bin'), 'E_PICKLE_FORMAT');
    expect(err.message).toMatch(/t\.bin: truncated.*byte offset 2/);
    expectCode(() => parsePickle(enc('\x80\x02h\x05.')), 'E_PICKLE_FORMAT');
    // ([b'a'], [True, False]): 1 image for 2 pairs
    expectCode(() => parseVerificationBin(enc('\x80\x04]C\x01a\x85]\x88\x89\x86\x86.')), 'E_PICKLE_FORMAT');
    expectCode(() => parseVerificationBin(enc('\x80\x04](C\x01aC\x01be](\x88\x89e\x86.')), 'E_BIN_FORMAT');
    expectCode(() => parseVerificationBin(enc('\x80\x04K\x01.')), 'E_BIN_FORMAT');
  });

  it('refuses numpy arrays that are not uint8', () => {
    const f4 = enc('\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R(K\x01K\x01\x85cnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89C\x04\x00\x00\x80?tb.');
    expect(expectCode(() => parsePickle(f4), 'E_PICKLE_UNSAFE').message).toContain("numpy.dtype('f4')");
  });
});

describe('malicious .bin files on disk', () => {
  const hasPython = spawnSync('python3', ['-c', 'import pickle'], { stdio: 'ignore' }).status === 0;

  it('readVerificationBin and verifyBin refuse them with E_PICKLE_UNSAFE naming the file, and nothing runs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-evil-bin-'));
    try {
      for (const p of maliciousPickles(join(dir, 'pwned'))) {
        const file = join(dir, `${p.name}.bin`);
        writeFileSync(file, p.bytes);
        const err = expectCode(() => readVerificationBin(file), 'E_PICKLE_UNSAFE');
        expect(err.message.startsWith(`${file}: `)).toBe(true);
        expect(err.message).toContain('os.system');
        // refused at the GLOBAL opcode, before the argument or the REDUCE that would call it is read
        expect(err.details.offset).toBe(p.globalOffset);
        let embedded = 0;
        const embedder = functionEmbedder((_x, n) => {
          embedded += n;
          return new Float32Array(n * 2);
        });
        await expect(verifyBin(file, embedder, { progress: false })).rejects.toMatchObject({ code: 'E_PICKLE_UNSAFE', message: expect.stringContaining(file) });
        expect(embedded).toBe(0);
      }
      expect(existsSync(join(dir, 'pwned'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // the control that makes "nothing runs" meaningful: the same files do run the command under Python's pickle
  (hasPython ? it : it.skip)('the payloads are live: Python\'s pickle.load runs them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-evil-py-'));
    try {
      for (const p of maliciousPickles(join(dir, 'pwned'))) {
        const file = join(dir, `${p.name}.bin`);
        writeFileSync(file, p.bytes);
        const r = spawnSync('python3', ['-c', 'import pickle, sys; pickle.load(open(sys.argv[1], "rb"))', file], { encoding: 'utf8' });
        expect(r.stderr).toBe('');
        expect(existsSync(join(dir, 'pwned'))).toBe(true);
        rmSync(join(dir, 'pwned'));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('verification .bin round trip', () => {
  it('writes protocol 4 with frames and reads back the same bytes and labels', () => {
    const images = Array.from({ length: 6 }, (_, i) => Uint8Array.from({ length: i === 2 ? 70000 : 10 + 50 * i }, (_, k) => (k * 7 + i) & 255));
    const issame = [true, false, true];
    const bytes = encodeVerificationBin(images, issame);
    expect([bytes[0], bytes[1], bytes[2]]).toEqual([0x80, 4, 0x95]);
    const back = parseVerificationBin(bytes);
    expect(back.protocol).toBe(4);
    expect(back.issame).toEqual(issame);
    expect(back.images.map((b) => Buffer.from(b).toString('hex'))).toEqual(images.map((b) => Buffer.from(b).toString('hex')));
    const dir = mkdtempSync(join(tmpdir(), 'pfc-eval-bin-'));
    writeVerificationBin(join(dir, 'x.bin'), images, issame);
    expect(readVerificationBin(join(dir, 'x.bin')).issame).toEqual(issame);
  });

  it('rejects an image count that is not twice the pair count', () => {
    expectCode(() => encodeVerificationBin([new Uint8Array(1)], [true]), 'E_ARGUMENT');
  });

  it('names a missing file', () => {
    const err = expectCode(() => readVerificationBin('/nonexistent/lfw.bin'), 'E_NOT_FOUND');
    expect(err.message).toContain('/nonexistent/lfw.bin');
  });
});

describe('fixtures and real .bin files', () => {
  const manifest = join(fixtures, 'manifest.json');
  (existsSync(manifest) ? it : it.skip)('reads the Python 2, Python 3 and numpy-array fixtures identically', async () => {
    const m = JSON.parse(readFileSync(manifest, 'utf8')) as {
      images: { jpeg_sha256: string }[];
      verification_bin: { issame_list: boolean[]; files: Record<string, { pickle_protocol: number }> };
    };
    for (const [name, info] of Object.entries(m.verification_bin.files)) {
      const bin = readVerificationBin(join(fixtures, name));
      expect(bin.protocol).toBe(info.pickle_protocol);
      expect(bin.issame).toEqual(m.verification_bin.issame_list);
      expect(bin.images.map((b) => createHash('sha256').update(b).digest('hex'))).toEqual(m.images.map((i) => i.jpeg_sha256));
    }
    // sharp (libjpeg-turbo) decodes exactly as PIL did for the fixture's reference pixels
    const pil = readNpy(join(fixtures, 'decoded_rgb_pil.npy'));
    const bin = readVerificationBin(join(fixtures, 'verif_py3.bin'));
    for (let i = 0; i < bin.images.length; i++) {
      const img = await decodeImage(bin.images[i]!);
      expect([img.width, img.height]).toEqual([112, 112]);
      expect(Buffer.compare(Buffer.from(img.data), Buffer.from((pil.data as Uint8Array).subarray(i * 112 * 112 * 3, (i + 1) * 112 * 112 * 3)))).toBe(0);
    }
  });

  (existsSync(realBin) ? it : it.skip)('parses the real protocol 3 (numpy arrays) and protocol 4 (frames) files', async () => {
    const files = readdirSync(realBin).filter((f) => f.endsWith('.bin'));
    expect(files.length).toBeGreaterThanOrEqual(2);
    const lfw = readVerificationBin(join(realBin, 'insightface_small_lfw.bin'));
    expect(lfw.protocol).toBe(3);
    expect(lfw.images).toHaveLength(20);
    expect(lfw.issame).toEqual(new Array(10).fill(true));
    const first = await decodeImage(lfw.images[0]!);
    expect([first.width, first.height]).toEqual([112, 112]);
    const fid = readVerificationBin(join(realBin, 'faceid_processing_validation.bin'));
    expect(fid.protocol).toBe(4);
    expect(fid.images).toHaveLength(1498);
    expect(fid.issame).toHaveLength(749);
    expect(fid.images.every((b) => b[0] === 0xff && b[1] === 0xd8)).toBe(true);
  });
});

describe('verifyBin with a function embedder', () => {
  it('decodes (resizing odd sizes), embeds with flips and evaluates', async () => {
    const { verifyBin } = await import('./verify-bin');
    const { functionEmbedder } = await import('./embed');
    const colours = [[200, 10, 10], [190, 20, 10], [10, 200, 10], [10, 10, 200]];
    const images: Uint8Array[] = [];
    for (const [i, [r, g, b]] of colours.entries()) {
      const w = i === 3 ? 100 : 112;
      const h = i === 3 ? 120 : 112;
      images.push(await sharp({ create: { width: w, height: h, channels: 3, background: { r: r!, g: g!, b: b! } } }).png().toBuffer());
    }
    const dir = mkdtempSync(join(tmpdir(), 'pfc-eval-vb-'));
    writeVerificationBin(join(dir, 'colours.bin'), images, [true, false]);
    let seen = 0;
    const embedder = functionEmbedder((x, n, size) => {
      seen += n;
      const out = new Float32Array(n * 3);
      for (let i = 0; i < n * size * size; i++) for (let c = 0; c < 3; c++) out[Math.floor(i / (size * size)) * 3 + c]! += (x[i * 3 + c]! + 1) / (size * size);
      return out;
    });
    const res = await verifyBin(join(dir, 'colours.bin'), embedder, { folds: 2, progress: false });
    expect(seen).toBe(8); // 4 images and their mirrors
    expect(res.name).toBe('colours');
    expect(res.images).toBe(4);
    expect(res.flip).toBe(true);
    // pair 0 (two reds) is close, pair 1 (green vs blue) is far
    expect(res.distances[0]!).toBeLessThan(0.05);
    expect(res.distances[1]!).toBeGreaterThan(1.5);
    expect(res.accuracy).toBeGreaterThanOrEqual(0.5);
  });
});
