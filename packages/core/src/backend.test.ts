import * as tf from '@tensorflow/tfjs-core';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { initBackend, processWasmThreads } from './backend';
import { PfcError } from './errors';

const req = createRequire(__filename);

describe('initBackend', () => {
  it('with tfjs-node absent, picks wasm and says why the native backends were skipped', async () => {
    const logs: string[] = [];
    const load = (m: string) => {
      if (m.startsWith('@tensorflow/tfjs-node')) throw new Error(`Cannot find module '${m}'`);
      return req(m);
    };
    const info = await initBackend({ load, env: {}, log: (l) => logs.push(l) });
    expect(info.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(info.threads).toBeGreaterThanOrEqual(1);
    expect(info.skipped.map((s) => s.name)).toEqual(['tensorflow-gpu', 'tensorflow']);
    expect(info.skipped[0]!.reason).toMatch(/tfjs-node-gpu/);
    expect(logs).toEqual([`[pfc] tensor backend: wasm (${info.threads} thread${info.threads === 1 ? '' : 's'})`]);
  });

  it('PFC_BACKEND=cpu forces cpu', async () => {
    const info = await initBackend({ env: { PFC_BACKEND: 'cpu' }, log: null });
    expect(info.name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });

  it('an unknown name is a PfcError listing the valid names', async () => {
    await expect(initBackend({ env: { PFC_BACKEND: 'cuda' }, log: null })).rejects.toThrow(PfcError);
    await expect(initBackend({ env: { PFC_BACKEND: 'cuda' }, log: null })).rejects.toThrow(
      'environment variable PFC_BACKEND: unknown backend "cuda"; valid names are tensorflow-gpu, tensorflow, wasm, cpu',
    );
    await expect(initBackend({ backend: 'gpu' as never, log: null })).rejects.toMatchObject({ code: 'E_BACKEND_UNKNOWN' });
  });

  it('a forced backend that cannot load is E_BACKEND_UNAVAILABLE with an install hint', async () => {
    const load = (m: string) => {
      throw new Error(`Cannot find module '${m}'`);
    };
    await expect(initBackend({ backend: 'tensorflow', load, log: null })).rejects.toMatchObject({
      code: 'E_BACKEND_UNAVAILABLE',
      message: expect.stringMatching(/npm install @tensorflow\/tfjs-node@4\.22\.0/),
    });
  });
});

describe('processWasmThreads', () => {
  it('is PFC_WASM_THREADS when set, else the cores up to 8; a bad value is E_BACKEND_THREADS naming the variable', () => {
    expect(processWasmThreads({ PFC_WASM_THREADS: '3' })).toBe(3);
    expect(processWasmThreads({})).toBe(Math.min(8, availableParallelism()));
    expect(() => processWasmThreads({ PFC_WASM_THREADS: '9' })).toThrow(expect.objectContaining({ code: 'E_BACKEND_THREADS', message: expect.stringContaining('PFC_WASM_THREADS') }));
  });
});
