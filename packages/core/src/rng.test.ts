import { Rng } from './rng';

describe('Rng', () => {
  it('is reproducible from its seed and differs across seeds', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const xa = Array.from({ length: 5 }, () => a.uniform());
    const xb = Array.from({ length: 5 }, () => b.uniform());
    const xc = Array.from({ length: 5 }, () => c.uniform());
    expect(xa).toEqual(xb);
    expect(xa).not.toEqual(xc);
  });

  it('has uniform moments within 4 standard errors (n = 200k)', () => {
    const r = new Rng(1);
    const n = 200_000;
    let s = 0;
    let s2 = 0;
    let outside = 0;
    for (let i = 0; i < n; i++) {
      const u = r.uniform();
      if (!(u >= 0 && u < 1)) outside++;
      s += u;
      s2 += u * u;
    }
    expect(outside).toBe(0);
    const mean = s / n;
    const variance = s2 / n - mean * mean;
    expect(Math.abs(mean - 0.5)).toBeLessThan(4 * Math.sqrt(1 / 12 / n));
    expect(Math.abs(variance - 1 / 12)).toBeLessThan(0.002);
  });

  it('has normal moments within tolerance (n = 200k)', () => {
    const r = new Rng(7);
    const x = r.fillNormal(new Float64Array(200_000), 2, 3);
    const mean = x.reduce((a, b) => a + b, 0) / x.length;
    const std = Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length);
    expect(Math.abs(mean - 2)).toBeLessThan(0.03);
    expect(Math.abs(std - 3)).toBeLessThan(0.03);
  });

  it('permutation contains every index once and is seeded', () => {
    const p = new Rng(3).permutation(1000);
    expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(p).toEqual(new Rng(3).permutation(1000));
    expect(p).not.toEqual(new Rng(4).permutation(1000));
  });

  it('saves and restores its state exactly, including the cached normal', () => {
    const r = new Rng(9);
    r.normal();
    const state = r.getState();
    const expected = [r.normal(), r.uniform(), r.int(100)];
    const r2 = Rng.fromState(JSON.parse(JSON.stringify(state)));
    expect([r2.normal(), r2.uniform(), r2.int(100)]).toEqual(expected);
  });

  it('forks independent streams without advancing the parent', () => {
    const r = new Rng(5);
    const before = r.getState();
    const f1 = r.fork('loader');
    const f2 = r.fork('sampler');
    expect(r.getState()).toEqual(before);
    expect(f1.uniform()).not.toEqual(f2.uniform());
    expect(new Rng(5).fork('loader').uniform()).toEqual(new Rng(5).fork('loader').uniform());
  });

  it('rejects a bad argument with a typed error', () => {
    expect(() => new Rng(NaN)).toThrow(/seed/);
    expect(() => new Rng(1).int(0)).toThrow(/positive integer/);
  });
});
