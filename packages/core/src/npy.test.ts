import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PfcError } from './errors';
import { encodeNpy, parseNpy, readNpy, writeNpy, npyToFloat64 } from './npy';
import { float32ToFloat16 } from './float16';

const shared = join(__dirname, '../../../../shared/vectors');

describe('npy', () => {
  it('round-trips every supported dtype and shape', () => {
    const cases = [
      new Float32Array([1.5, -2, 3.25, 0, 1e-8, -7]),
      new Float64Array([Math.PI, -Math.E, 0, 1e300, -1e-300, 5]),
      new Int32Array([1, -2, 3, 2 ** 31 - 1, -(2 ** 31), 0]),
      new Uint8Array([0, 1, 2, 255, 128, 7]),
      new BigInt64Array([1n, -2n, 3n, 2n ** 62n, 0n, -1n]),
    ];
    for (const data of cases) {
      const back = parseNpy(encodeNpy(data, [2, 3]));
      expect(back.shape).toEqual([2, 3]);
      expect(back.data).toEqual(data);
    }
    const half = float32ToFloat16([1, 0.5, -2]);
    const h = parseNpy(encodeNpy(half, [3], 'f2'));
    expect(h.dtype).toBe('f2');
    expect(Array.from(npyToFloat64(h))).toEqual([1, 0.5, -2]);
  });

  it('writes headers aligned to 64 bytes, as numpy does', () => {
    const bytes = encodeNpy(new Float32Array(3));
    const headerLen = bytes[8]! | (bytes[9]! << 8);
    expect((10 + headerLen) % 64).toBe(0);
    expect(bytes[10 + headerLen - 1]).toBe(0x0a);
  });

  it('writes files atomically and reads them back', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-npy-'));
    const p = join(dir, 'a.npy');
    writeNpy(p, new Float32Array([1, 2, 3, 4]), [2, 2]);
    expect(readNpy(p).data).toEqual(new Float32Array([1, 2, 3, 4]));
    expect(readdirSync(dir)).toEqual(['a.npy']);
  });

  it('transposes Fortran-ordered arrays to C order', () => {
    const c = encodeNpy(new Int32Array([1, 4, 2, 5, 3, 6]), [2, 3]);
    const text = Buffer.from(c).toString('latin1').replace("'fortran_order': False", "'fortran_order': True ");
    const f = parseNpy(new Uint8Array(Buffer.from(text, 'latin1')));
    expect(Array.from(f.data as Int32Array)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('names the file and offset on a bad magic string or truncated data', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-npy-'));
    const bad = join(dir, 'bad.npy');
    writeFileSync(bad, 'hello world, not an array');
    expect(() => readNpy(bad)).toThrow(PfcError);
    expect(() => readNpy(bad)).toThrow(/bad\.npy: not a \.npy file.*offset 0/);
    const missing = join(dir, 'missing.npy');
    expect(() => readNpy(missing)).toThrow(expect.objectContaining({ code: 'E_NPY_OPEN', message: expect.stringContaining(`${missing}: cannot read`) }));
    const trunc = encodeNpy(new Float64Array(10)).subarray(0, 150);
    try {
      parseNpy(trunc, 't.npy');
      throw new Error('no error');
    } catch (e) {
      expect(PfcError.is(e, 'E_NPY_FORMAT')).toBe(true);
      expect((e as PfcError).message).toMatch(/t\.npy: data truncated.*need 80 bytes/);
    }
  });

  const vec = join(shared, 'pfc/arcface_small/input');
  (existsSync(vec) ? it : it.skip)('reads the reference vectors written by numpy', () => {
    for (const f of readdirSync(vec).filter((n) => n.endsWith('.npy'))) {
      const a = readNpy(join(vec, f));
      expect(a.data.length).toBe(a.shape.reduce((x, y) => x * y, 1));
      // re-encoding gives back the same array
      const again = parseNpy(encodeNpy(a.data, a.shape, a.dtype));
      expect(again.data).toEqual(a.data);
    }
  });
});
