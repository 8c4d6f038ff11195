import { AdamW, Sgd, clipGradNorm } from './optim';

describe('Sgd (torch formula)', () => {
  it('two steps against the hand-computed recurrence', () => {
    const w = new Float32Array([1, -2]);
    const g = new Float32Array([0.5, 0.25]);
    const opt = new Sgd(0.9, 0.1);
    opt.step([w], [g], 0.1);
    // d = g + wd·w, buf = d, w -= lr·buf
    const d1 = [0.5 + 0.1, 0.25 - 0.2];
    const w1 = [1 - 0.1 * d1[0]!, -2 - 0.1 * d1[1]!];
    expect(w[0]).toBeCloseTo(w1[0]!, 6);
    expect(w[1]).toBeCloseTo(w1[1]!, 6);
    opt.step([w], [g], 0.1);
    const b2 = [0.9 * d1[0]! + 0.5 + 0.1 * w1[0]!, 0.9 * d1[1]! + 0.25 + 0.1 * w1[1]!];
    expect(w[0]).toBeCloseTo(w1[0]! - 0.1 * b2[0]!, 6);
    expect(w[1]).toBeCloseTo(w1[1]! - 0.1 * b2[1]!, 6);
  });
  it('state round-trips so a restored optimizer continues identically', () => {
    const a = new Sgd();
    const wa = new Float32Array([1, 2, 3]);
    const g = new Float32Array([0.1, -0.2, 0.3]);
    a.step([wa], [g], 0.1);
    const b = new Sgd();
    b.setState(a.getState());
    const wb = wa.slice();
    a.step([wa], [g], 0.05);
    b.step([wb], [g], 0.05);
    expect(Array.from(wb)).toEqual(Array.from(wa));
  });
  it('rejects mismatched shapes', () => {
    expect(() => new Sgd().step([new Float32Array(2)], [new Float32Array(3)], 0.1)).toThrow(/parameter 0 has 2 elements/);
    expect(() => new Sgd().setState({ kind: 'adamw', step: 0, slots: {} })).toThrow(/E_CHECKPOINT|sgd state/);
  });
});

describe('AdamW', () => {
  it('first step moves each weight by lr·sign(g) after decoupled decay', () => {
    const w = new Float32Array([1, -1]);
    const opt = new AdamW(0.1);
    opt.step([w], [new Float32Array([0.3, -0.7])], 0.01);
    // m̂ = g, v̂ = g², update = lr·g/(|g|+eps)
    expect(w[0]).toBeCloseTo(1 * (1 - 0.001) - 0.01, 6);
    expect(w[1]).toBeCloseTo(-1 * (1 - 0.001) + 0.01, 6);
  });
});

describe('clipGradNorm', () => {
  it('scales to the max norm and returns the total norm', () => {
    const g = [new Float32Array([3]), new Float32Array([4])];
    expect(clipGradNorm(g, 1)).toBeCloseTo(5, 6);
    expect(g[0]![0]).toBeCloseTo(0.6, 6);
    expect(g[1]![0]).toBeCloseTo(0.8, 6);
  });
  it('leaves small gradients alone', () => {
    const g = [new Float32Array([0.3, 0.4])];
    expect(clipGradNorm(g, 5)).toBeCloseTo(0.5, 6);
    expect(Array.from(g[0]!)).toEqual([Math.fround(0.3), Math.fround(0.4)]);
  });
  it('reports a non-finite norm', () => {
    expect(clipGradNorm([new Float32Array([NaN])], 5)).toBeNaN();
  });
});
