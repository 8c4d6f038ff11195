import { describeArch, resolveConfig } from './arch';
import { summary } from './summary';

describe('summary (parameters and MACs at 112x112, from the architecture description)', () => {
  // The reference's numbers (spec §3.1/3.2, README FLOPs column and flops.py): params in M, MACs in G, 2 decimals.
  const reference: [string, number, number | null][] = [
    ['r18', 24.03, 2.61],
    ['r34', 34.14, 4.46],
    ['r50', 43.59, 6.31],
    ['r100', 65.16, 12.09],
    ['r200', 118.83, 23.42],
    ['mbf', 2.06, 0.44],
    ['mbf_large', 6.31, 1.82],
  ];
  it.each(reference)('%s: %f M params, %f GMACs', (name, params, gmacs) => {
    const s = summary(name);
    expect(Number((s.params / 1e6).toFixed(2))).toBe(params);
    if (gmacs !== null) expect(Number((s.macs / 1e9).toFixed(2))).toBe(gmacs);
  });

  it('counts the 25088→512 FC of r50 (12.85 M) and the frozen features weight', () => {
    const a = describeArch(resolveConfig('r50'));
    const fc = a.params.find((p) => p.name === 'fc.weight')!;
    expect(fc.shape).toEqual([512, 25088]);
    expect((25088 * 512 + 512) / 1e6).toBeCloseTo(12.85, 2);
    expect(a.params.find((p) => p.name === 'features.weight')!.kind).toBe('bn.frozen_weight');
    expect(a.headShape).toEqual([512, 7, 7]);
  });

  it('uses the reference state-dict names in definition order', () => {
    const names = describeArch(resolveConfig('r18')).params.map((p) => p.name);
    expect(names.slice(0, 7)).toEqual(['conv1.weight', 'bn1.weight', 'bn1.bias', 'bn1.running_mean', 'bn1.running_var', 'bn1.num_batches_tracked', 'prelu.weight']);
    expect(names).toContain('layer1.0.downsample.0.weight');
    expect(names).toContain('layer4.1.bn3.running_var');
    expect(names).not.toContain('layer1.1.downsample.0.weight');
    expect(names.slice(-7)).toEqual(['fc.weight', 'fc.bias', 'features.weight', 'features.bias', 'features.running_mean', 'features.running_var', 'features.num_batches_tracked']);
    const mbf = describeArch(resolveConfig('mbf')).params.map((p) => p.name);
    expect(mbf).toContain('layers.1.layers.0.weight');
    expect(mbf).toContain('layers.3.layers.3.layers.2.layers.1.running_var');
    expect(mbf).toContain('features.layers.2.weight');
  });

  it('reduces a configurable iResNet and reports a 4x4 head for 56x56 inputs', () => {
    const s = summary({ name: 'iresnet', layers: [1, 1, 1, 1], widths: [16, 32, 64, 128], embeddingSize: 128, inputSize: 56 });
    expect(describeArch(s.config).headShape).toEqual([128, 4, 4]);
    expect(s.embeddingSize).toBe(128);
    expect(s.inputShape).toEqual([3, 56, 56]);
  });
});
