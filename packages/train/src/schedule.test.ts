import { PolynomialLRWarmup, stepCounts } from './schedule';

describe('stepCounts', () => {
  // Spec §5.9 table (8 GPUs × 128).
  it.each([
    ['ms1mv2_r100', 5822653, 128, 8, 20, 0, 5686, 113720, 0],
    ['glint360k_r100', 17091657, 128, 8, 20, 0, 16691, 333820, 0],
    ['ms1mv3_r50_onegpu', 5179510, 128, 1, 20, 0, 40464, 809280, 0],
    ['wf42m_pfc03_32gpu_r100', 42474557, 128, 32, 20, 2, 10369, 207380, 20738],
  ])('%s', (_n, numImage, batchSize, worldSize, numEpoch, warmupEpoch, perEpoch, total, warmup) => {
    const s = stepCounts({ numImage, batchSize, worldSize, numEpoch, warmupEpoch });
    expect(s.stepsPerEpoch).toBe(perEpoch);
    expect(s.totalStep).toBe(total);
    expect(s.warmupStep).toBe(warmup);
  });
  it('rejects a dataset smaller than one global batch', () => {
    expect(() => stepCounts({ numImage: 10, batchSize: 8, worldSize: 2, numEpoch: 1, warmupEpoch: 0 })).toThrow(/smaller than one global batch/);
  });
});

/** The reference implementation, transcribed: a multiplicative update of the previous value. */
function torchSequence(base: number, w: number, T: number, power: number, n: number): number[] {
  const out = [base];
  let lr = base;
  for (let l = 1; l <= n; l++) {
    if (l > T) {
      // unchanged
    } else if (l <= w) lr = (base * l) / w;
    else lr = lr * Math.pow((1 - (l - w) / (T - w)) / (1 - (l - 1 - w) / (T - w)), power);
    out.push(lr);
  }
  return out;
}

describe('PolynomialLRWarmup', () => {
  it('closed-form values with warmup (base 0.1, w 4, T 12)', () => {
    const s = new PolynomialLRWarmup(0.1, 4, 12);
    const seq = [s.lr];
    for (let i = 0; i < 14; i++) seq.push(s.step());
    // t=0: full base LR (reference quirk), warmup t/w, then linear decay to 0 at T, then 0.
    const want = [0.1, 0.025, 0.05, 0.075, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.0375, 0.025, 0.0125, 0, 0, 0];
    seq.forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 12));
  });
  it('power 2 (the 2022 PolyScheduler decay)', () => {
    const s = new PolynomialLRWarmup(0.1, 0, 10, 2);
    expect(s.lrAt(5)).toBeCloseTo(0.1 * 0.25, 12);
    expect(s.lrAt(10)).toBe(0);
  });
  it.each([
    [0, 100, 1],
    [10, 100, 1],
    [10, 57, 2],
  ])('matches the reference multiplicative recurrence (w %d, T %d, power %d) to 1e-12', (w, T, p) => {
    const s = new PolynomialLRWarmup(0.4, w, T, p);
    const ref = torchSequence(0.4, w, T, p, T + 5);
    ref.forEach((v, t) => expect(Math.abs(s.lrAt(t) - v)).toBeLessThan(1e-12));
  });
  it('state round-trips', () => {
    const a = new PolynomialLRWarmup(0.1, 2, 20);
    for (let i = 0; i < 7; i++) a.step();
    const b = new PolynomialLRWarmup(0.1, 2, 20);
    b.setState(a.getState());
    expect(b.lr).toBe(a.lr);
    expect(b.lastEpoch).toBe(7);
  });
  it('validates its arguments', () => {
    expect(() => new PolynomialLRWarmup(0.1, 10, 10)).toThrow(/totalIters/);
    expect(() => new PolynomialLRWarmup(-1, 0, 10)).toThrow(/baseLr/);
  });
});
