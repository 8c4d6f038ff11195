/**
 * Images per second of the @pfc/backbone networks on the selected tensor backend: inference-mode forward and a
 * training step's forward + backward (`backwardFromEmbeddings`: training-mode BatchNorm, gradients of every
 * trainable variable), for r18, r50 and mbf at batch 8 and 32. The baseline beside each row is PyTorch 1.13 on the
 * CPUs of this machine kind (2 threads), measured separately and given to us: r18 forward 14.2 img/s, train
 * 3.6 img/s; r50 forward 7.4, train 2.0 (no mbf figure). Options: `--quick` (batch 8 only),
 * `--nets r18,mbf`, `--batches 8`, `--backend wasm|cpu|...`, `--threads N` (the threaded wasm backend with N threads,
 * 1 to 8; implies `--backend wasm`; default `PFC_WASM_THREADS`, else 1). A multi-threaded run writes
 * `results/backbone-<N>threads.{json,md}`, beside the single-threaded `results/backbone.*`, so a 2-thread row can be
 * read next to PyTorch's 2-thread figures.
 */
import { availableParallelism } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '@pfc/core';
import type { BackendName } from '@pfc/core';
import { backwardFromEmbeddings, createBackbone, summary } from '@pfc/backbone';
import { timeMs, writeReport } from './report';
import type { Row } from './report';

const PYTORCH_CPU: Record<string, { forward: number; train: number }> = {
  r18: { forward: 14.2, train: 3.6 },
  r50: { forward: 7.4, train: 2.0 },
};

function arg(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

export default async function (args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const nets = (arg(args, '--nets') ?? 'r18,r50,mbf').split(',');
  const batches = (arg(args, '--batches') ?? (quick ? '8' : '8,32')).split(',').map(Number);
  const threadsArg = arg(args, '--threads');
  const threads = threadsArg === undefined ? undefined : Number(threadsArg);
  let backend = arg(args, '--backend') as BackendName | undefined;
  if (threads !== undefined) {
    if (backend !== undefined && backend !== 'wasm') throw new Error(`--threads applies to the wasm backend, not --backend ${backend}`);
    backend = 'wasm';
  }
  // initBackend falls back to one thread when the threaded build cannot start and says why in its log line only.
  let backendLine = '';
  const info = await initBackend({ backend, threads, log: (m) => (backendLine = m) });
  if (threads !== undefined && info.threads !== threads) {
    throw new Error(`asked for ${threads} wasm threads, the backend runs ${info.threads}: ${backendLine}`);
  }
  const multiThreaded = info.tfBackend === 'wasm' && info.threads > 1;
  const rows: Row[] = [];
  // Smaller batches first: a wasm allocation failure aborts the module, and every later row is then left unmeasured.
  let aborted: string | null = null;
  // Training-step peak memory per image, measured (tf.profile) at the first batch size: wasm's heap is 4 GB, and an
  // allocation failure aborts the module, so a step predicted not to fit is reported instead of attempted.
  const peakPerImage = new Map<string, { perImage: number; base: number }>();
  const HEAP_LIMIT = 3.5 * 2 ** 30;
  for (const batch of batches) {
    for (const net of nets) {
      const s = summary(net);
      const row: Row = { network: net, batch, backend: info.name, threads: info.threads };
      if (aborted) {
        row.error = `not run: the backend aborted earlier (${aborted})`;
        rows.push(row);
        continue;
      }
      // r50 at batch 32 is ~400 GFLOP per forward: one timed run after one warm-up keeps the default run short.
      const heavy = s.macs * batch > 60e9;
      const runs = heavy ? 1 : 2;
      let model: ReturnType<typeof createBackbone> | undefined;
      let x: tf.Tensor | undefined;
      let dEmb: tf.Tensor | undefined;
      try {
        model = createBackbone(net, { seed: 1 });
        const m = model;
        x = tf.randomUniform([batch, 112, 112, 3], -1, 1, 'float32', 2);
        dEmb = tf.randomNormal([batch, s.embeddingSize], 0, 1, 'float32', 3);
        const xs = x;
        const ds = dEmb;
        const fwdMs = await timeMs(async () => {
          const y = m.apply(xs);
          await y.data();
          y.dispose();
        }, runs, 1);
        const step = () => {
          const grads = backwardFromEmbeddings(m, xs, ds);
          return grads;
        };
        let trainMs: number | null = null;
        const known = peakPerImage.get(net);
        const predicted = known ? known.base + known.perImage * batch : 0;
        if (info.tfBackend === 'wasm' && known && predicted > HEAP_LIMIT) {
          row.note = `fwd+bwd not run: predicted peak ${(predicted / 2 ** 30).toFixed(1)} GB exceeds the 4 GB wasm heap`;
        } else {
          const base = tf.memory().numBytes;
          const prof = await tf.profile(async () => {
            const grads = step();
            await Promise.all([...grads.values()].map((g) => g.data()));
            tf.dispose([...grads.values()]);
            return tf.scalar(0);
          });
          if (!known) peakPerImage.set(net, { perImage: (prof.peakBytes - base) / batch, base });
          row['train peak MB/img'] = (prof.peakBytes - base) / batch / 2 ** 20;
          trainMs = await timeMs(async () => {
            const grads = step();
            await Promise.all([...grads.values()].map((g) => g.data()));
            tf.dispose([...grads.values()]);
          }, runs, 0);
        }
        const fwd = (batch * 1000) / fwdMs;
        const train = trainMs === null ? null : (batch * 1000) / trainMs;
        const base = PYTORCH_CPU[net];
        Object.assign(row, {
          'forward img/s': fwd,
          'PyTorch CPU forward img/s': base?.forward ?? null,
          'forward ratio': base ? fwd / base.forward : null,
          'fwd+bwd img/s': train,
          'PyTorch CPU train img/s': base?.train ?? null,
          'train ratio': base && train !== null ? train / base.train : null,
          'GFLOP/s (fwd)': (2 * s.macs * fwd) / 1e9,
          runs,
        });
        tf.dispose([x, dEmb]);
        model.dispose();
      } catch (err) {
        row.error = (err as Error).message.split('\n')[0]!;
        if (/Aborted|memory/i.test(row.error)) aborted = row.error;
        else {
          tf.dispose([x, dEmb].filter((t): t is tf.Tensor => t !== undefined));
          model?.dispose();
        }
      }
      rows.push(row);
      process.stderr.write(`${JSON.stringify(row)}\n`);
    }
  }
  writeReport({
    name: multiThreaded ? `backbone-${info.threads}threads` : 'backbone',
    description:
      'Images per second of iResNet-18/50 and MobileFaceNet (112×112, embedding 512) on the selected tfjs backend: inference-mode forward, and forward + backward of a training step (training-mode BatchNorm with running-stat updates, gradients of every trainable variable via backwardFromEmbeddings). Baseline: PyTorch 1.13 CPU on this machine kind, 2 threads (given figures, same batch regime).',
    rows,
    notes: [
      `backend ${info.name} (${info.tfBackend}), ${info.threads} thread${info.threads === 1 ? '' : 's'}${multiThreaded ? ' (tfjs threaded-SIMD wasm build)' : ''}, ${availableParallelism()} logical cores; the PyTorch figures are 2 threads; median of ${quick ? 2 : '1–2'} timed runs after one warm-up (1 for configurations above 60 GMACs per batch).`,
      'ratio = ours / PyTorch CPU (higher is better; < 1 means slower). The 2 cores were shared with other engineers’ builds and tests during the run, so absolute numbers are contended.',
      'Backbone training on CPU is for small models and tests (see docs/decisions and engine.md); real runs use tfjs-node-gpu.',
      `Training steps keep every activation until the backward pass (no gradient checkpointing): measured peak ${[...peakPerImage].map(([n, p]) => `${n} ${(p.perImage / 2 ** 20).toFixed(0)} MB`).join(', ')} per image, so steps predicted above 3.5 GB are not attempted on the 4 GB wasm heap (the row says so instead of a speed). Inference frees activations as it goes and runs at any of these batches.`,
    ],
  });
}
