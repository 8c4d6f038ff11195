import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from './cli';
import { launchBackendFromEnv } from './launch';

describe('launchBackendFromEnv', () => {
  it('picks mpi under an MPI launcher, PFC_COLLECTIVE when set, else threads', () => {
    expect(launchBackendFromEnv({})).toBe('threads');
    expect(launchBackendFromEnv({ OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '1' })).toBe('mpi');
    expect(launchBackendFromEnv({ PMIX_RANK: '0' })).toBe('mpi');
    expect(launchBackendFromEnv({ PFC_COLLECTIVE: 'local' })).toBe('local');
    expect(launchBackendFromEnv({ OMPI_COMM_WORLD_SIZE: '2', PFC_COLLECTIVE: 'nccl' })).toBe('nccl');
    expect(() => launchBackendFromEnv({ PFC_COLLECTIVE: 'gloo' })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT', message: expect.stringContaining('"gloo"') }));
  });
});

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
  it('an unknown --backend is a usage error naming the choices', async () => {
    let err = '';
    expect(await main(['--config', 'x.json', '--backend', 'gloo'], () => {}, (s) => (err += s))).toBe(2);
    expect(err).toMatch(/--backend must be one of threads, local, mpi, nccl, got 'gloo'/);
  });
  it('a missing --config is a usage error', async () => {
    let err = '';
    expect(await main([], () => {}, (s) => (err += s))).toBe(2);
    expect(err).toMatch(/--config/);
  });
});
