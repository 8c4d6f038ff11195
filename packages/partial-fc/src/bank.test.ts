import { Rng, fromFloat16Bits, toFloat16Bits } from '@pfc/core';
import { ClassBank } from './bank';

describe('ClassBank', () => {
  it('float16 rows round to nearest even exactly as @pfc/core (random bit patterns and magnitudes 2^-40…2^20)', () => {
    const d = 4096;
    const bank = new ClassBank(1, d, 'float16');
    const rng = new Rng(5);
    const probe = new Float32Array(d);
    const bits = new Uint32Array(probe.buffer);
    const back = new Float32Array(d);
    let mismatches = 0;
    for (let it = 0; it < 60; it++) {
      if (it % 2) for (let j = 0; j < d; j++) probe[j] = (rng.uniform() - 0.5) * 2 ** (rng.int(60) - 40);
      else for (let j = 0; j < d; j++) bits[j] = rng.nextUint32();
      bank.writeWeight(0, probe);
      bank.readWeight(0, back);
      for (let j = 0; j < d; j++) {
        const want = fromFloat16Bits(toFloat16Bits(probe[j]!));
        if (Number.isNaN(want) ? !Number.isNaN(back[j]!) : !Object.is(back[j], want)) mismatches++;
      }
    }
    expect(mismatches).toBe(0);
  });

  it('sgdRow is PyTorch SGD for every storage type (zero gradient = weight decay only)', () => {
    for (const storage of ['float64', 'float32', 'float16'] as const) {
      const bank = new ClassBank(2, 3, storage);
      bank.writeWeight(0, [0.5, -0.25, 1]);
      bank.writeWeight(1, [0.5, -0.25, 1]);
      const o = { lr: 0.5, momentum: 0.75, weightDecay: 0.25 };
      bank.sgdRow(0, Float64Array.of(1, 2, -1), 0, o);
      bank.sgdRow(0, Float64Array.of(1, 2, -1), 0, o);
      bank.sgdRow(1, null, 0, o);
      // by hand, step 1: g = grad + wd·w, buf = g, w -= lr·buf; step 2: buf = μ·buf + g
      let w = [0.5, -0.25, 1];
      let m = [0, 0, 0];
      for (let s = 0; s < 2; s++) {
        m = m.map((mj, j) => o.momentum * mj + ([1, 2, -1][j]! + o.weightDecay * w[j]!));
        w = w.map((wj, j) => wj - o.lr * m[j]!);
      }
      const w1 = new Float64Array(3);
      const m1 = new Float64Array(3);
      bank.readWeight(0, w1);
      bank.readMomentum(0, m1);
      // all values here are exact in binary16 except where rounding is stated by the storage: 2^-11 relative
      const tol = storage === 'float16' ? 2e-3 : storage === 'float32' ? 1e-7 : 1e-15;
      w.forEach((v, j) => expect(Math.abs(w1[j]! - v)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(v))));
      m.forEach((v, j) => expect(Math.abs(m1[j]! - v)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(v))));
      const w2 = new Float64Array(3);
      bank.readWeight(1, w2);
      [0.5, -0.25, 1].forEach((v, j) => expect(Math.abs(w2[j]! - (v - o.lr * o.weightDecay * v))).toBeLessThanOrEqual(tol));
    }
  });

  it('reports its size and rejects bad shapes', () => {
    expect(new ClassBank(10, 4, 'float16').byteLength).toBe(10 * 4 * 2 * 2);
    expect(new ClassBank(10, 4, 'float32').byteLength).toBe(10 * 4 * 4 * 2);
    expect(() => new ClassBank(-1, 4, 'float32')).toThrow(/rows/);
    expect(() => new ClassBank(1, 0, 'float32')).toThrow(/dim/);
  });
});
