/**
 * The tiny training job the train tests share: 6 synthetic identities × 8 images of 16 px, a 4-stage iResNet of
 * widths 4–8, embedding 8, batch 4, Partial FC at sample rate 0.5 with CosFace (margins 1, 0, 0.4).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSynthRec } from '@pfc/data';

/** The CLI entry point and tsx's CommonJS hook: `node --require TSX_CJS --conditions=@pfc/source CLI …` runs the
 * sources in one process (tsx's own CLI would run them in a grandchild, out of reach of a SIGKILL). */
export const CLI = join(__dirname, 'cli.ts');
export const TSX_CJS = require.resolve('tsx/cjs');

/** Config fields (reference names) of the tiny job, without `output` and `rec`: a fresh object each call. */
export const tinyJob = () => ({
  network: 'small',
  network_options: { layers: [1, 1, 1, 1], widths: [4, 4, 8, 8] },
  image_size: 16,
  embedding_size: 8,
  num_classes: 6,
  num_image: 48,
  batch_size: 4,
  num_epoch: 1,
  lr: 0.05,
  margin_list: [1, 0, 0.4],
  sample_rate: 0.5,
  frequent: 2,
  verbose: 100000,
});

/**
 * Writes the tiny job's data (`<root>/data/train.rec/.idx`) and its config (`<root>/job.json`, `tinyJob()` with
 * `overrides`), and returns the config's path.
 */
export async function writeTinyJob(root: string, overrides: Record<string, unknown> = {}): Promise<string> {
  mkdirSync(join(root, 'data'));
  await writeSynthRec(join(root, 'data', 'train'), { identities: 6, perIdentity: 8, size: 16, grid: 3, maxShift: 1, seed: 5 });
  const config = join(root, 'job.json');
  writeFileSync(config, JSON.stringify({ ...tinyJob(), rec: join(root, 'data'), ...overrides }));
  return config;
}
