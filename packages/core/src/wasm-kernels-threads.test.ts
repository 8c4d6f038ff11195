import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { initBackend } from './backend';

// The threaded wasm backend is tried in a child process: its pthreads live as long as the process, and the test is
// that the process still ends by itself once its work is done.
const child = `
const tf = require('@tensorflow/tfjs-core');
const { initBackend } = require(${JSON.stringify(join(__dirname, 'backend.ts'))});
const { wasmRunningWorkers } = require(${JSON.stringify(join(__dirname, 'wasm', 'threads.ts'))});
(async () => {
  const logs = [];
  const info = await initBackend({ backend: 'wasm', threads: 2, log: (l) => logs.push(l) });
  const grads = () => tf.tidy(() => {
    const x = tf.tensor4d(Array.from({ length: 2 * 17 * 15 * 8 }, (_, i) => Math.sin(i)), [2, 17, 15, 8]);
    const f = tf.tensor4d(Array.from({ length: 3 * 3 * 8 * 16 }, (_, i) => Math.cos(i)), [3, 3, 8, 16]);
    return tf.grads((a, b) => tf.sum(tf.square(tf.conv2d(a, b, 2, 'same'))))([x, f]);
  });
  const read = (ts) => { const out = ts.map((t) => Array.from(t.dataSync())); tf.dispose(ts); return out; };
  const wasm = read(grads());
  await initBackend({ backend: 'cpu', log: null });
  const cpu = read(grads());
  let maxDiff = 0;
  wasm.forEach((w, i) => w.forEach((v, j) => { maxDiff = Math.max(maxDiff, Math.abs(v - cpu[i][j]) / Math.max(1, Math.abs(cpu[i][j]))); }));
  console.log(JSON.stringify({ threads: info.threads, running: wasmRunningWorkers(), maxDiff, logs }));
})();
`;

describe('threaded wasm backend', () => {
  it('starts 2 threads, computes the same gradients as cpu, and lets the process exit', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', child], { cwd: join(__dirname, '..'), encoding: 'utf8', timeout: 60_000 });
    expect(r.signal).toBeNull(); // not killed by the timeout: the unref'd pthreads did not keep it alive
    expect(r.status).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
    expect(line).toBeDefined();
    const out = JSON.parse(line!) as { threads: number; running: number; maxDiff: number; logs: string[] };
    expect(out.threads).toBe(2);
    expect(out.running).toBeGreaterThanOrEqual(1); // the pool's pthreads are running workers
    expect(out.logs).toEqual(['[pfc] tensor backend: wasm (2 threads)']);
    // Sums of ~1000 products of values up to ~10 in float32, relative to max(1, |value|).
    expect(out.maxDiff).toBeLessThan(1e-4);
  });

  it.each([0, 9, 2.5])('threads %p is E_BACKEND_THREADS', async (threads) => {
    await expect(initBackend({ backend: 'wasm', threads, log: null })).rejects.toMatchObject({
      code: 'E_BACKEND_THREADS',
      message: `initBackend: option threads: wasm threads must be an integer from 1 to 8, got ${threads}`,
    });
  });

  it('asking for threads after wasm started single-threaded keeps 1 thread and says why', async () => {
    await initBackend({ backend: 'wasm', log: null });
    const logs: string[] = [];
    const info = await initBackend({ backend: 'wasm', threads: 2, log: (l) => logs.push(l) });
    expect(info.threads).toBe(1);
    expect(logs).toEqual(['[pfc] tensor backend: wasm (1 thread; threads unavailable: the wasm backend was already initialised with 1 thread in this process)']);
  });

  it('PFC_WASM_THREADS is validated too', async () => {
    await expect(initBackend({ backend: 'wasm', env: { PFC_WASM_THREADS: 'two' }, log: null })).rejects.toMatchObject({ code: 'E_BACKEND_THREADS' });
  });
});
