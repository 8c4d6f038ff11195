import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import { DEFAULT_CONFIG, formatConfig, loadConfig, resolveConfig } from './config';

const job = { num_classes: 100, num_image: 1000, rec: '/data' };

describe('resolveConfig', () => {
  it('overlays a job config on the reference base defaults', () => {
    const c = resolveConfig({ ...job, margin_list: [1.0, 0.0, 0.4], sample_rate: 0.1 });
    expect(c.margin_list).toEqual([1, 0, 0.4]);
    expect(c.sample_rate).toBe(0.1);
    expect(c.lr).toBe(0.1);
    expect(c.weight_decay).toBe(5e-4);
    expect(c.batch_size).toBe(128);
    expect(c.seed).toBe(2048);
    expect(c.frequent).toBe(10);
    expect(c.verbose).toBe(2000);
    expect(c.embedding_size).toBe(512);
    expect(DEFAULT_CONFIG.margin_list).toEqual([1, 0.5, 0]);
  });

  it.each([
    [{ batch_size: 0 }, 'batch_size', 'a positive integer'],
    [{ batch_size: 12.5 }, 'batch_size', 'a positive integer'],
    [{ sample_rate: 1.5 }, 'sample_rate', 'in [0, 1]'],
    [{ lr: 'fast' }, 'lr', 'a finite number'],
    [{ margin_list: [1, 0.5] }, 'margin_list', 'three finite numbers'],
    [{ margin_list: [0.9, 0.5, 0] }, 'margin_list', 'm1 = 1'],
    [{ optimizer: 'adam' }, 'optimizer', "one of 'sgd', 'adamw'"],
    [{ pfc_update: 'lazy' }, 'pfc_update', "one of 'sparse', 'dense'"],
    [{ val_targets: 'lfw' }, 'val_targets', 'an array of strings'],
    [{ num_classes: undefined }, 'num_classes', 'a positive integer'],
    [{ warmup_epoch: 30 }, 'warmup_epoch', 'at most num_epoch'],
    [{ using_wandb: true }, 'using_wandb', 'false'],
    [{ network_options: { layers: [1, 1] } }, 'network_options', '4 positive integers'],
  ])('rejects %j naming the field, the expectation and the value', (bad, field, expected) => {
    let err: unknown;
    try {
      resolveConfig({ ...job, ...bad }, 'job.json');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PfcError);
    expect((err as PfcError).code).toBe('E_CONFIG');
    expect((err as PfcError).message).toContain(`'${field}'`);
    expect((err as PfcError).message).toContain(expected);
    expect((err as PfcError).message).toContain('job.json');
  });

  it('rejects unknown fields with a suggestion', () => {
    expect(() => resolveConfig({ ...job, batchsize: 4 })).toThrow(/unknown field 'batchsize' \(did you mean 'batch_size'\?\)/);
  });

  it('accepts and ignores the W&B keys of base.py', () => {
    expect(() => resolveConfig({ ...job, wandb_key: 'X', wandb_project: 'p' })).not.toThrow();
  });

  it('formats the config like the reference start-up log', () => {
    const lines = formatConfig(resolveConfig(job));
    expect(lines).toContainEqual(`: lr${' '.repeat(23)}0.1`);
    expect(lines).toContainEqual(`: margin_list${' '.repeat(14)}(1, 0.5, 0)`);
  });
});

describe('loadConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pfc-config-'));
  it('reads JSON and applies overrides; output null becomes work_dirs/<name>', () => {
    const f = join(dir, 'glint360k_r100.json');
    writeFileSync(f, JSON.stringify({ ...job, output: null, batch_size: 64 }));
    const c = loadConfig(f, { batch_size: 8 });
    expect(c.batch_size).toBe(8);
    expect(c.output).toBe(join('work_dirs', 'glint360k_r100'));
  });
  it('reads a TypeScript module with a default export', () => {
    const f = join(dir, 'job.ts');
    writeFileSync(f, `export default { num_classes: 7, num_image: 70, rec: 'x', network: 'mbf' };\n`);
    expect(loadConfig(f).network).toBe('mbf');
  });
  it('names a missing file and a bad extension', () => {
    expect(() => loadConfig(join(dir, 'nope.json'))).toThrow(/does not exist/);
    const f = join(dir, 'job.yaml');
    writeFileSync(f, 'a: 1');
    expect(() => loadConfig(f)).toThrow(/must end in .json/);
  });
  it('wraps a JSON syntax error in E_CONFIG', () => {
    const f = join(dir, 'broken.json');
    writeFileSync(f, '{ "lr": ');
    expect(() => loadConfig(f)).toThrow(PfcError);
  });
});
