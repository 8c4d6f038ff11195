import { parentPort } from 'node:worker_threads';
import { decodeBatch } from './decode';
import type { DecodeRequest } from './decode';

// Loader worker: decodes, flips and normalizes one batch per message and transfers the float32 result back.
// Batches run one after another: each already keeps a decode in flight while this thread normalizes, and a worker
// per core with one batch each uses the cores without oversubscribing them with libvips threads.
let queue: Promise<void> = Promise.resolve();
parentPort!.on('message', (req: DecodeRequest) => {
  queue = queue.then(() =>
    decodeBatch(req).then(
      (res) => parentPort!.postMessage(res, [res.images.buffer as ArrayBuffer]),
      (err: unknown) => parentPort!.postMessage({ id: req.id, fatal: err instanceof Error ? err.message : String(err) }),
    ),
  );
});
