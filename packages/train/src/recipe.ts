import { existsSync, mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { join, resolve } from 'node:path';
import { PfcError, initBackend, type BackendName } from '@pfc/core';
import { encodeJpeg, synthIdentityImage, synthIdentitySeed, writeSynthRec, type SynthOptions } from '@pfc/data';
import { ARCFACE_TEMPLATE, evaluateIjb, functionEmbedder, writeIjbProtocol, writeVerificationBin, type IjbImageSpec } from '@pfc/eval';
import { parseOverrides, resolveConfig, type TrainConfig } from './config';
import { launchBackendFromEnv, launchTraining, type LaunchBackend } from './launch';
import { backboneFromConfig, embedImages, verify, type TrainResult } from './trainer';
import { loadVerificationSet } from './verification';
import { readSafetensors } from '@pfc/backbone';
import { createCommunicator } from '@pfc/collective';

/** Size of the embedded synthetic run. */
export interface SyntheticScale {
  /** Training identities (classes). */
  identities: number;
  /** Images per training identity. */
  perIdentity: number;
  /** Held-out identities of the verification `.bin` (4 images each). */
  verificationIdentities: number;
  /** Verification pairs (half genuine). */
  verificationPairs: number;
  /** Held-out identities of the IJB-format protocol (2 templates each). */
  ijbIdentities: number;
  /** Image side in pixels. */
  imageSize: number;
  /** Epochs. */
  epochs: number;
  /** Per-rank batch size. */
  batchSize: number;
}

/**
 * The default synthetic run: 12000 images of 1000 identities, one epoch of 187 steps of 2 × 32 images (about 6
 * minutes on 2 busy CPU cores with the wasm backend). One epoch of 1000 × 16 reached 99.2% held-out verification.
 */
export const DEFAULT_SYNTHETIC: Readonly<SyntheticScale> = Object.freeze({
  identities: 1000,
  perIdentity: 12,
  verificationIdentities: 300,
  verificationPairs: 1200,
  ijbIdentities: 200,
  imageSize: 32,
  epochs: 1,
  batchSize: 32,
});

/** Options of {@link runRecipe}. */
export interface RecipeOptions {
  /** Dataset directory (`train.rec/.idx` + `<val>.bin`); none = the embedded synthetic default. */
  data?: string;
  /** Where outputs go (default `work_dirs/<name>`). */
  workDir?: string;
  /** Ranks (default 2). */
  worldSize?: number;
  backend?: LaunchBackend;
  tensorBackend?: BackendName;
  /** Synthetic run size (default {@link DEFAULT_SYNTHETIC}). */
  synthetic?: Partial<SyntheticScale>;
  /** Config fields that win over the recipe's. */
  overrides?: Record<string, unknown>;
  log?: (line: string) => void;
  /** Resume from the work directory's latest checkpoint. */
  resume?: boolean;
}

/** What {@link runRecipe} returns. */
export interface RecipeResult {
  config: TrainConfig;
  results: TrainResult[];
  /** Final flip-test accuracy per verification set. */
  verification: { name: string; accuracy: number; accuracyStd: number }[];
  /** The IJB TAR@FAR table text (synthetic run). */
  ijbTable: string | null;
  /** TAR at each FAR of the IJB table (synthetic run). */
  ijbTar: { far: number; tar: number }[];
  seconds: number;
  /** This process's rank in an MPI job (0 otherwise); only rank 0 evaluates and prints. */
  rank: number;
}

/** Synthetic images of identity `identity` (uint8 HWC), as the data package renders its training set. */
function synthOptions(size: number): SynthOptions {
  // Scaled from the 112-pixel defaults (grid 6, shift 6 px).
  return { size, grid: 6, maxShift: Math.max(1, Math.round((6 * size) / 112)), brightness: 25, noise: 12 };
}

async function writeSyntheticSet(dir: string, seed: number, s: SyntheticScale, log: (l: string) => void): Promise<{ rec: string; bin: string; ijb: string }> {
  mkdirSync(dir, { recursive: true });
  const rec = join(dir, 'train.rec');
  const bin = join(dir, 'synth_val.bin');
  const ijb = join(dir, 'IJBC');
  const opts = synthOptions(s.imageSize);
  if (!existsSync(rec)) {
    log(`synthesizing ${s.identities} identities × ${s.perIdentity} images (${s.imageSize}×${s.imageSize}) into ${rec}`);
    await writeSynthRec(join(dir, 'train'), { ...opts, identities: s.identities, perIdentity: s.perIdentity, seed });
  }
  // Held-out identities: indices at and beyond `identities` of the same seed are never in the training set.
  if (!existsSync(bin)) {
    const first = s.identities;
    const images: Uint8Array[] = [];
    const issame: boolean[] = [];
    for (let p = 0; p < s.verificationPairs; p++) {
      const genuine = p % 2 === 0;
      const a = first + ((p * 7919) % s.verificationIdentities);
      const b = genuine ? a : first + ((p * 7919 + 1 + ((p * 104729) % (s.verificationIdentities - 1))) % s.verificationIdentities);
      images.push(await encodeJpeg(synthIdentityImage(synthIdentitySeed(seed, a), 1000 + 2 * p, opts), 95));
      images.push(await encodeJpeg(synthIdentityImage(synthIdentitySeed(seed, b), 1001 + 2 * p, opts), 95));
      issame.push(genuine);
    }
    writeVerificationBin(bin, images, issame);
    log(`wrote ${bin}: ${s.verificationPairs} pairs of ${s.verificationIdentities} held-out identities`);
  }
  if (!existsSync(join(ijb, 'meta'))) {
    const first = s.identities + s.verificationIdentities;
    const scale = s.imageSize / 112;
    const landmarks = ARCFACE_TEMPLATE.map(([x, y]) => [x * scale, y * scale]);
    const images: IjbImageSpec[] = [];
    let media = 0;
    for (let k = 0; k < s.ijbIdentities; k++) {
      const idSeed = synthIdentitySeed(seed, first + k);
      for (let t = 0; t < 2; t++) {
        const template = 2 * k + t + 1;
        for (let m = 0; m < 2; m++) {
          media += 1;
          const j = 4 * t + 2 * m;
          images.push({ name: `${template}_${m}.jpg`, data: await encodeJpeg(synthIdentityImage(idSeed, 2000 + j, opts), 95), template, media, landmarks });
        }
      }
    }
    const pairs: [number, number, 0 | 1][] = [];
    for (let k = 0; k < s.ijbIdentities; k++) {
      pairs.push([2 * k + 1, 2 * k + 2, 1]);
      for (let q = 1; q <= 9; q++) pairs.push([2 * k + 1, 2 * ((k + q * 17) % s.ijbIdentities) + 2, 0]);
    }
    writeIjbProtocol(ijb, 'IJBC', { images, pairs });
    log(`wrote ${ijb}: IJB-C-format protocol of ${s.ijbIdentities} held-out identities, ${pairs.length} template pairs`);
  }
  return { rec, bin, ijb };
}

/**
 * The config of the embedded synthetic run derived from a recipe: the recipe's margin and sample rate, a small
 * iResNet (layers [1,1,1,1], widths [16,32,64,128], embedding 128) on small images, sized by `scale`.
 */
export function syntheticConfig(recipe: Record<string, unknown>, scale: SyntheticScale, workDir: string): TrainConfig {
  const base = resolveConfig({ ...recipe, num_classes: 1, num_image: 1, rec: '' });
  return resolveConfig({
    margin_list: base.margin_list,
    sample_rate: base.sample_rate,
    interclass_filtering_threshold: base.interclass_filtering_threshold,
    network: 'small',
    network_options: { layers: [1, 1, 1, 1], widths: [16, 32, 64, 128] },
    image_size: scale.imageSize,
    embedding_size: 128,
    num_classes: scale.identities,
    num_image: scale.identities * scale.perIdentity,
    batch_size: scale.batchSize,
    num_epoch: scale.epochs,
    warmup_epoch: 0,
    lr: 0.1,
    weight_decay: 5e-4,
    frequent: 20,
    verbose: 1_000_000,
    seed: base.seed,
    fp16: false,
    rec: join(workDir, 'synthetic'),
    val_targets: ['synth_val'],
    output: workDir,
    keep_checkpoints: 1,
  });
}

/**
 * Runs a recipe end to end. With `data`, the recipe's config trains on `<data>/train.rec` and verifies on its `.bin`
 * sets. Without, the embedded default: synthesizes a learnable identity set (a real `.rec/.idx`), a verification
 * `.bin` and an IJB-C-format protocol of held-out identities, trains a small backbone with Partial FC on
 * `worldSize` ranks, then evaluates the exported model: verification accuracy (10-fold, flip) and the IJB TAR@FAR table.
 * @param recipe the reference config fields (e.g. glint360k_r100: CosFace, 360232 classes)
 * @param name recipe name (default work directory `work_dirs/<name>`)
 */
export async function runRecipe(name: string, recipe: Record<string, unknown>, options: RecipeOptions = {}): Promise<RecipeResult> {
  const t0 = Date.now();
  // Under mpirun (or with backend mpi/nccl) this process is one rank of the job: rank 0 writes the synthetic set
  // while the others wait at a barrier, every rank trains, and rank 0 alone evaluates and prints.
  const backend: LaunchBackend = options.backend ?? launchBackendFromEnv();
  const job = backend === 'mpi' || backend === 'nccl' ? await createCommunicator({ backend: 'mpi' }) : null;
  const isRoot = (job?.rank ?? 0) === 0;
  const log = isRoot ? (options.log ?? ((l: string) => process.stdout.write(`${l}\n`))) : () => {};
  const workDir = resolve(options.workDir ?? join('work_dirs', name));
  const worldSize = job?.worldSize ?? options.worldSize ?? 2;
  const tensorBackend = options.tensorBackend ?? 'wasm';
  await initBackend({ backend: tensorBackend, log: null });
  let config: TrainConfig;
  let ijbRoot: string | null = null;
  if (options.data) {
    const data = resolve(options.data);
    if (!existsSync(join(data, 'train.rec'))) throw new PfcError('E_DATA', `runRecipe: ${data} has no train.rec`, { details: { dir: data } });
    config = resolveConfig({ ...recipe, rec: data, output: workDir, ...(options.resume ? { resume: true } : {}), ...options.overrides }, name);
  } else {
    const scale = { ...DEFAULT_SYNTHETIC, ...options.synthetic };
    config = resolveConfig({ ...syntheticConfig(recipe, scale, workDir), ...(options.resume ? { resume: true } : {}), ...options.overrides }, `${name} (synthetic)`);
    if (isRoot) ijbRoot = (await writeSyntheticSet(config.rec, config.seed, scale, log)).ijb;
    await job?.barrier();
  }
  log(`training ${name}: ${config.network} on ${worldSize} rank(s), ${config.num_classes} classes, sample rate ${config.sample_rate}, margin (${config.margin_list.join(', ')})`);
  const results = await launchTraining({ config, tensorBackend }, { worldSize, backend });
  if (!isRoot) return { config, results, verification: [], ijbTable: null, ijbTar: [], seconds: (Date.now() - t0) / 1000, rank: job!.rank };
  // Evaluate the exported model in this thread.
  const backbone = backboneFromConfig(config);
  backbone.loadStateDict(readSafetensors(join(config.output!, 'model.safetensors')).tensors);
  const verification: RecipeResult['verification'] = [];
  for (const n of config.val_targets) {
    const f = join(config.rec, `${n}.bin`);
    if (!existsSync(f)) continue;
    const r = verify(backbone, await loadVerificationSet(f, config.image_size));
    verification.push({ name: n, accuracy: r.accuracy, accuracyStd: r.accuracyStd });
    log(`[${n}] verification accuracy (10-fold, flip): ${(100 * r.accuracy).toFixed(2)}% ± ${(100 * r.accuracyStd).toFixed(2)}%`);
  }
  let ijbTable: string | null = null;
  let ijbTar: RecipeResult['ijbTar'] = [];
  if (ijbRoot) {
    const S = config.image_size;
    const embedder = functionEmbedder((batch, n) => embedImages(backbone, batch.subarray(0, n * S * S * 3)), { inputSize: S, name: name });
    const r = await evaluateIjb(ijbRoot, 'IJBC', embedder, { job: name, resultDir: join(workDir, 'ijb') });
    ijbTable = r.text;
    ijbTar = r.table.readings.map((x) => ({ far: x.far, tar: x.tar }));
    log(`IJB-C-format 1:1 verification of held-out synthetic identities (${r.templates} templates, ${r.pairs} pairs):\n${r.text}`);
  }
  backbone.dispose();
  return { config, results, verification, ijbTable, ijbTar, seconds: (Date.now() - t0) / 1000, rank: 0 };
}

const RECIPE_HELP = (name: string, sampleRate: unknown) => `Usage: npm run train -- [options]

Runs the ${name} recipe (sample rate ${sampleRate}). Without --data: the embedded synthetic default (synthesizes a
learnable identity set as .rec/.idx, a verification .bin and an IJB-format protocol of held-out identities, trains a
small iResNet with Partial FC on 2 ranks, prints the TAR@FAR table and the verification accuracy).

Options:
  --data <dir>            dataset directory with train.rec/train.idx and the val_targets .bin files
  --sample-rate <r>       Partial FC sample rate in (0, 1] (default ${sampleRate}: the recipe's); 1.0 = every class center
  --set <field=value>     override a config field (JSON value; repeatable), e.g. --set batch_size=64 --set lr=0.2
  --world-size <n>        data-parallel ranks (default 2; under mpirun: the job's -np)
  --backend <b>           threads | local | mpi | nccl (default: $PFC_COLLECTIVE, else mpi under mpirun, else threads)
  --tensor-backend <b>    wasm | cpu | tensorflow | tensorflow-gpu (default wasm)
  --work-dir <dir>        outputs (default work_dirs/${name})
  --resume                continue from the work directory's latest checkpoint
  -h, --help              this text

Examples:
  npm run train
  npm run train -- --sample-rate ${sampleRate === 1 ? '0.1' : '1.0'} --work-dir work_dirs/${name}_sr${sampleRate === 1 ? '0.1' : '1.0'}
  npm run train -- --data /train_tmp/${name === 'glint360k' ? 'glint360k' : 'faces_emore'} --world-size 8 --tensor-backend tensorflow-gpu
  npm run train -- --resume
`;

/**
 * Parses the examples' command line into {@link runRecipe} options (without `log`), or `'help'`. Throws
 * `E_ARGUMENT` on an unknown option or a malformed value.
 */
export function parseRecipeArgs(argv: string[]): Omit<RecipeOptions, 'log'> | 'help' {
  let values: { [k: string]: string | boolean | string[] | undefined };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        data: { type: 'string' },
        'sample-rate': { type: 'string' },
        set: { type: 'string', multiple: true },
        'world-size': { type: 'string' },
        backend: { type: 'string' },
        'tensor-backend': { type: 'string' },
        'work-dir': { type: 'string' },
        resume: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new PfcError('E_ARGUMENT', (err as Error).message, { cause: err });
  }
  if (values.help) return 'help';
  const overrides = parseOverrides((values.set as string[] | undefined) ?? [], 'npm run train');
  const sr = values['sample-rate'] as string | undefined;
  if (sr !== undefined) {
    const r = Number(sr);
    // resolveConfig accepts 0 (the reference's "no sampling" spelling is 1.0); a recipe run needs a real rate.
    if (sr.trim() === '' || !(r > 0 && r <= 1)) throw new PfcError('E_ARGUMENT', `npm run train: --sample-rate must be a number in (0, 1], got '${sr}'`);
    overrides.sample_rate = r;
  }
  const ws = values['world-size'] as string | undefined;
  if (ws !== undefined && !/^[1-9]\d*$/.test(ws)) throw new PfcError('E_ARGUMENT', `npm run train: --world-size must be a positive integer, got '${ws}'`);
  return {
    ...(values.data ? { data: values.data as string } : {}),
    ...(ws ? { worldSize: Number(ws) } : {}),
    ...(values.backend ? { backend: values.backend as LaunchBackend } : {}),
    ...(values['tensor-backend'] ? { tensorBackend: values['tensor-backend'] as BackendName } : {}),
    ...(values['work-dir'] ? { workDir: values['work-dir'] as string } : {}),
    ...(values.resume ? { resume: true } : {}),
    ...(Object.keys(overrides).length ? { overrides } : {}),
  };
}

/**
 * The examples' command line: parses `argv` (`--data`, `--sample-rate`, `--set field=value`, `--world-size`,
 * `--backend`, `--tensor-backend`, `--work-dir`, `--resume`, `--help`; see {@link parseRecipeArgs}) and runs
 * {@link runRecipe}. Returns the exit code (0 done, 1 error, 2 usage; errors are printed).
 */
export async function recipeMain(name: string, recipe: Record<string, unknown>, argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const help = RECIPE_HELP(name, recipe.sample_rate ?? 1);
  let options: Omit<RecipeOptions, 'log'>;
  try {
    const parsed = parseRecipeArgs(argv);
    if (parsed === 'help') {
      out(help);
      return 0;
    }
    options = parsed;
  } catch (err) {
    out(`${(err as Error).message}\n\n${help}`);
    return 2;
  }
  try {
    const r = await runRecipe(name, recipe, { ...options, log: (l) => out(`${l}\n`) });
    if (r.rank === 0) out(`done in ${(r.seconds / 60).toFixed(1)} min; outputs in ${r.config.output}\n`);
    return 0;
  } catch (err) {
    out(`error${err instanceof PfcError ? ` ${err.code}` : ''}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
