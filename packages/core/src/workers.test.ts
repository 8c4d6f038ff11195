import { Worker } from 'node:worker_threads';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { workerScript } from './workers';

describe('workerScript', () => {
  it('runs a TypeScript worker that imports @pfc packages from source', async () => {
    const dir = mkdtempSync(join(__dirname, '.tmp-worker-'));
    try {
      writeFileSync(
        join(dir, 'w.ts'),
        "import { parentPort } from 'node:worker_threads';\nimport { Rng } from '@pfc/core';\nconst x: number = new Rng(1).uniform();\nparentPort!.postMessage(x);\n",
      );
      const ws = workerScript(join(dir, 'caller.ts'), dir, 'w');
      expect(ws.filename).toBe(join(dir, 'w.ts'));
      const value = await new Promise<number>((resolve, reject) => {
        const w = new Worker(ws.entry, { eval: ws.eval, execArgv: ws.execArgv });
        w.once('message', resolve);
        w.once('error', reject);
      });
      const { Rng } = await import('./rng');
      expect(value).toBe(new Rng(1).uniform());
    } finally {
      require('node:fs').rmSync(dir, { recursive: true, force: true });
    }
  });

  it('points a built caller at the built worker with the same extension', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfc-w-'));
    writeFileSync(join(dir, 'w.mjs'), '');
    expect(workerScript(join(dir, 'index.mjs'), dir, 'w')).toEqual({ filename: join(dir, 'w.mjs'), entry: join(dir, 'w.mjs'), eval: false, execArgv: [] });
    expect(workerScript(join(dir, 'index.js'), dir, 'w').filename).toBe(join(dir, 'w.js'));
  });
});
