import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from './cli';

describe('pfc-train CLI', () => {
  it('--help lists the options and examples', async () => {
    let out = '';
    expect(await main(['--help'], (s) => (out += s))).toBe(0);
    expect(out).toContain('--resume');
    expect(out).toContain('--world-size');
    expect(out).toContain('Examples:');
  });
  it('a bad config exits 1 with E_CONFIG naming the field', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-cli-'));
    const f = join(dir, 'bad.json');
    writeFileSync(f, JSON.stringify({ num_classes: 10, num_image: 100, rec: dir, batch_size: -1 }));
    let err = '';
    expect(await main(['--config', f, '-q'], () => {}, (s) => (err += s))).toBe(1);
    expect(err).toMatch(/E_CONFIG: .*field 'batch_size' must be a positive integer, got -1/);
  });
  it('a missing --config is a usage error', async () => {
    let err = '';
    expect(await main([], () => {}, (s) => (err += s))).toBe(2);
    expect(err).toMatch(/--config/);
  });
});
