import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '@pfc/core';
import { main } from './cli';

const DIR = join(__dirname, '../../../../shared/vectors/pfc/cosface_small');
const has = existsSync(DIR);

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t) }, out, err };
}

describe('pfc-partial-fc check-vectors', () => {
  (has ? it : it.skip)('prints one JSON object and exits 0 within tolerance', async () => {
    const c = io();
    expect(await main(['check-vectors', DIR, '--dtype', 'float64', '--world-size', '1,2'], c.io)).toBe(0);
    const report = JSON.parse(c.out.join(''));
    expect(report.pass).toBe(true);
    expect(report.runs).toHaveLength(2);
    expect(report.max.lossError).toBeLessThan(1e-9);
    expect(report.backend).toBe('local');
  });

  (has ? it : it.skip)('exits 1 when the reference disagrees', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'pfc-vec-'));
    try {
      cpSync(DIR, tmp, { recursive: true });
      const res = join(tmp, 'float32', 'ws1', 'result.json');
      const j = JSON.parse(readFileSync(res, 'utf8'));
      j.loss += 1e-3;
      rmSync(res, { force: true });
      writeFileSync(res, JSON.stringify(j));
      const c = io();
      expect(await main(['check-vectors', tmp, '--world-size', '1'], c.io)).toBe(1);
      expect(JSON.parse(c.out.join('')).runs[0].lossError).toBeGreaterThan(9e-4);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('exits 1 with E_VECTOR_DIR for a directory without a spec, 2 for bad options, 0 for --help', async () => {
    const c = io();
    expect(await main(['check-vectors', '/nonexistent/dir'], c.io)).toBe(1);
    expect(c.err.join('')).toMatch(/E_VECTOR_DIR/);
    const d = io();
    expect(await main(['check-vectors', '/x', '--dtype', 'float8'], d.io)).toBe(2);
    expect(d.err.join('')).toMatch(/float32, float64/);
    const h = io();
    expect(await main(['check-vectors', '--help'], h.io)).toBe(0);
    expect(h.out.join('')).toMatch(/Examples:/);
  });
});
