import { parentPort } from 'node:worker_threads';
import { decodeBatch } from './decode';
import type { DecodeRequest } from './decode';

// Loader worker: decodes, flips and normalizes one batch per message and transfers the float32 result back.
parentPort!.on('message', (req: DecodeRequest) => {
  decodeBatch(req).then(
    (res) => parentPort!.postMessage(res, [res.images.buffer as ArrayBuffer]),
    (err: unknown) => parentPort!.postMessage({ id: req.id, fatal: err instanceof Error ? err.message : String(err) }),
  );
});
