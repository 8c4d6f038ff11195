import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCommunicator } from './factory';
import { addonPath } from './native';
import { ncclAvailability } from './nccl';
import { existsSync } from 'node:fs';

const built = existsSync(addonPath('pfc_nccl'));
const availability = ncclAvailability();
const gpu = process.env.PFC_GPU === '1';

describe('NcclCommunicator', () => {
  (built && !availability.ok ? it : it.skip)('without libnccl / CUDA, reports which library is missing and gives E_BACKEND_UNAVAILABLE', async () => {
    expect(availability.error).toMatch(/libnccl\.so\.2|libcudart/);
    const dir = mkdtempSync(join(tmpdir(), 'pfc-nccl-'));
    try {
      const env = { PFC_NCCL_ID_FILE: join(dir, 'id'), PFC_RANK: '0', PFC_WORLD_SIZE: '1' };
      const err = await createCommunicator({ backend: 'nccl', env }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'E_BACKEND_UNAVAILABLE', message: expect.stringMatching(/nccl backend unavailable: .*(libnccl\.so\.2|libcudart).*NVIDIA GPU/s) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // GPU machines: PFC_GPU=1 npx jest src/nccl.test.ts. One rank per GPU (NCCL refuses two ranks on one device).
  (gpu ? it : it.skip)('passes the conformance suite on the visible GPUs (file bootstrap, one process per GPU)', async () => {
    expect(availability).toMatchObject({ ok: true });
    const n = Math.min(availability.devices ?? 1, 3);
    const dir = mkdtempSync(join(tmpdir(), 'pfc-nccl-'));
    const script = join(__dirname, '__fixtures__', 'nccl-main.ts');
    try {
      const runs = Array.from({ length: n }, (_, r) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const child = spawn(process.execPath, ['--conditions=@pfc/source', '-r', 'tsx/cjs', script], {
            env: { ...process.env, PFC_COLLECTIVE: 'nccl', PFC_NCCL_ID_FILE: join(dir, 'id'), PFC_RANK: String(r), PFC_WORLD_SIZE: String(n), LOCAL_RANK: String(r) },
            stdio: ['ignore', 'pipe', 'inherit'],
          });
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.on('close', (code) => resolve({ code, out }));
        }),
      );
      for (const { code, out } of await Promise.all(runs)) {
        expect(code).toBe(0);
        const report = JSON.parse(out) as { checks: { name: string; ok: boolean }[] };
        // NCCL decides fp16 rounding and NaN handling of max: those checks are reported, not required.
        const required = report.checks.filter((c) => !/float16|NaN/.test(c.name));
        expect(required.filter((c) => !c.ok)).toEqual([]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
