#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { MAX_WASM_THREADS, PfcError, initBackend, npyToFloat64, processWasmThreads, readNpy } from '@pfc/core';
import type { BackendName } from '@pfc/core';
import { onnxEmbedder, tfjsEmbedder, ARCFACE_NORMALIZATION } from './embed';
import type { Embedder, Normalization, TfjsModelLike } from './embed';
import { evaluateVerification } from './verification';
import type { VerificationEmbeddingsResult } from './verification';
import { verifyBin } from './verify-bin';
import { evaluateIjb, formatIjbTable, ijbTable, rocSvg } from './ijb';
import type { IjbTarget } from './ijb';
import { formatFixed } from './roc';
import { realpathSync, writeFileSync } from 'node:fs';
import { optionalRequire } from './require';

/** Where the CLI writes: stdout for results, stderr for progress and errors. */
export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

/** Model options shared by the commands that embed images. */
interface ModelOpts {
  model: string;
  network?: string;
  normMean?: number;
  normStd?: number;
  batchSize: number;
  backend?: string;
  threads?: number;
}

const num = (what: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${what} must be a number, got '${v}'`);
  return n;
};
const posInt = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`must be a positive integer, got '${v}'`);
  return n;
};

const wasmThreadsArg = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > MAX_WASM_THREADS) throw new InvalidArgumentError(`must be an integer from 1 to ${MAX_WASM_THREADS}, got '${v}'`);
  return n;
};

/**
 * Loads a face model as an {@link Embedder}: `.onnx` through onnxruntime-node, `.safetensors` through
 * `@pfc/backbone` (loaded on demand; an error says how to install it when absent).
 */
export async function loadModelEmbedder(opts: ModelOpts, log: (s: string) => void = () => {}): Promise<Embedder> {
  const normalization: Normalization = {
    mean: opts.normMean ?? ARCFACE_NORMALIZATION.mean,
    std: opts.normStd ?? ARCFACE_NORMALIZATION.std,
  };
  const lower = opts.model.toLowerCase();
  if (lower.endsWith('.onnx')) return onnxEmbedder(opts.model, { normalization, name: opts.model });
  if (lower.endsWith('.safetensors')) {
    let backbone: { loadSafetensors(path: string, network?: string): TfjsModelLike & { inputShape?: number[] } };
    try {
      backbone = optionalRequire('@pfc/backbone');
    } catch (cause) {
      throw new PfcError('E_BACKEND_UNAVAILABLE', `--model ${opts.model}: .safetensors models need the '@pfc/backbone' package (npm install @pfc/backbone), which failed to load: ${(cause as Error).message}`, { cause });
    }
    await initBackend({ ...(opts.backend ? { backend: opts.backend as BackendName } : {}), threads: opts.threads ?? processWasmThreads(), log });
    const model = backbone.loadSafetensors(opts.model, opts.network);
    const size = model.inputShape?.[0] ?? 112;
    return tfjsEmbedder(model, { normalization, inputSize: size, name: opts.model });
  }
  throw new PfcError('E_ARGUMENT', `--model ${opts.model}: expected a .onnx or .safetensors file`, { details: { model: opts.model } });
}

function verificationLine(name: string, r: VerificationEmbeddingsResult): string {
  const far = r.tarAtFar ? `, TAR@FAR=${r.tarAtFar.farTarget}: ${formatFixed(r.tarAtFar.tar, 5)}+-${formatFixed(r.tarAtFar.tarStd, 5)}` : '';
  return `[${name}]XNorm: ${formatFixed(r.xnorm, 6)}\n[${name}]Accuracy-${r.flip ? 'Flip' : 'NoFlip'}: ${formatFixed(r.accuracy, 5)}+-${formatFixed(r.accuracyStd, 5)} (best threshold ${formatFixed(r.bestThreshold, 3)}${far})`;
}

function verificationJson(name: string, r: VerificationEmbeddingsResult, extra: Record<string, unknown> = {}) {
  return {
    name,
    pairs: r.pairs,
    accuracy: r.accuracy,
    accuracyStd: r.accuracyStd,
    bestThreshold: r.bestThreshold,
    xnorm: r.xnorm,
    flip: r.flip,
    dim: r.dim,
    tarAtFar: r.tarAtFar,
    folds: r.folds,
    ...extra,
  };
}

/**
 * Builds the `pfc-eval` program.
 * @param io output streams (tests pass their own)
 */
export function createProgram(io: CliIo = { stdout: process.stdout, stderr: process.stderr }): Command {
  const out = (s: string) => io.stdout.write(`${s}\n`);
  const err = (s: string) => io.stderr.write(`${s}\n`);
  const program = new Command('pfc-eval')
    .description('Face verification evaluation with any face model: InsightFace .bin 10-fold verification and IJB-B/IJB-C 1:1 TAR@FAR, numerically as recognition/arcface_torch.')
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Examples:
  pfc-eval verification --bin lfw.bin cfp_fp.bin agedb_30.bin --model glint360k_r50.onnx
  pfc-eval ijb --root /data/IJB_release/IJBC --target IJBC --model glint360k_r100.onnx --result-dir results
  pfc-eval roc results/pfc/ijbc.npy labels.npy --json
Run 'pfc-eval <command> --help' for a command's options.`,
    );

  const modelOptions = (c: Command) =>
    c
      .option('--model <file>', 'face model: .onnx (onnxruntime-node) or .safetensors (@pfc/backbone)')
      .option('--network <name>', 'backbone name for a .safetensors file without metadata (r50, mbf, ...)')
      .option('--norm-mean <x>', 'pixel normalisation mean: x\' = (x - mean) / std (default 127.5, ArcFace)', num('--norm-mean'))
      .option('--norm-std <x>', 'pixel normalisation std (default 127.5; e.g. 128 with --norm-mean 127)', num('--norm-std'))
      .option('--batch-size <n>', 'images per model call', posInt, 64)
      .option('--backend <name>', 'tensor backend for .safetensors models (wasm, cpu, tensorflow...)')
      .option('--threads <n>', 'wasm backend threads for .safetensors models, 1-8 (default: PFC_WASM_THREADS, else the cores)', wasmThreadsArg)
      .option('--no-flip', 'do not add the mirrored image\'s embedding (flip test off)')
      .option('--json', 'print one JSON object on stdout');

  modelOptions(
    program
      .command('verification')
      .description('10-fold verification on InsightFace .bin sets (LFW, CFP-FP, AgeDB-30...), or on precomputed embeddings')
      .option('--bin <file...>', 'verification .bin files')
      .option('--embeddings <e.npy>', 'precomputed [2P, d] embeddings (rows 2p, 2p+1 form pair p)')
      .option('--embeddings-flip <f.npy>', 'precomputed embeddings of the mirrored images (added before normalising)')
      .option('--issame <s.npy>', 'pair labels [P] (bool or 0/1) for --embeddings')
      .option('--folds <n>', 'number of folds', posInt, 10),
  )
    .addHelpText(
      'after',
      `
Examples:
  pfc-eval verification --bin lfw.bin cfp_fp.bin agedb_30.bin --model glint360k_r50.onnx
  pfc-eval verification --bin lfw.bin --model mobilefacenet.onnx --norm-mean 127 --norm-std 128 --json
  pfc-eval verification --bin lfw.bin --model model.safetensors --network r50 --backend wasm
  pfc-eval verification --embeddings emb.npy --issame issame.npy --embeddings-flip emb_flip.npy`,
    )
    .action(async (o: ModelOpts & { bin?: string[]; embeddings?: string; embeddingsFlip?: string; issame?: string; folds: number; flip: boolean; json?: boolean }) => {
      if (o.embeddings) {
        if (!o.issame) throw new PfcError('E_ARGUMENT', 'verification --embeddings needs --issame <s.npy>');
        const e = readNpy(o.embeddings);
        if (e.shape.length !== 2) throw new PfcError('E_ARGUMENT', `${o.embeddings}: embeddings must be 2-D [2P, d], got shape [${e.shape}]`);
        const toF32 = (a: typeof e) => (a.data instanceof Float32Array ? a.data : Float32Array.from(npyToFloat64(a)));
        const issame = Array.from(npyToFloat64(readNpy(o.issame)), (v) => v !== 0);
        const flip = o.embeddingsFlip ? toF32(readNpy(o.embeddingsFlip)) : undefined;
        const r = evaluateVerification(toF32(e), e.shape[1]!, issame, { folds: o.folds, ...(flip ? { flipEmbeddings: flip } : {}) });
        if (o.json) out(JSON.stringify(verificationJson(o.embeddings, r)));
        else out(verificationLine(o.embeddings, r));
        return;
      }
      if (!o.bin || o.bin.length === 0) throw new PfcError('E_ARGUMENT', 'verification needs --bin <file...> with --model, or --embeddings with --issame');
      if (!o.model) throw new PfcError('E_ARGUMENT', 'verification --bin needs --model <file.onnx|file.safetensors>');
      const embedder = await loadModelEmbedder(o, err);
      const results = [];
      for (const file of o.bin) {
        const r = await verifyBin(file, embedder, { batchSize: o.batchSize, flip: o.flip, folds: o.folds, stream: io.stderr, ...(o.json ? { progress: false as const } : {}) });
        results.push(verificationJson(r.name, r, { file, images: r.images, imagesPerSecond: r.imagesPerSecond }));
        if (!o.json) out(`${verificationLine(r.name, r)}\n[${r.name}]${r.images} images at ${r.imagesPerSecond.toFixed(1)} img/s`);
      }
      await embedder.dispose?.();
      if (o.json) out(JSON.stringify({ model: o.model, results }));
    });

  modelOptions(
    program
      .command('ijb')
      .description('IJB-B / IJB-C 1:1 verification: 5-point alignment, flip test, norm and detector-score weighting, media then template pooling, TAR@FAR 1e-6...1e-1')
      .requiredOption('--root <dir>', 'protocol root holding meta/ and loose_crop/ (e.g. IJB_release/IJBC)')
      .option('--target <name>', 'IJBC or IJBB', 'IJBC')
      .option('--result-dir <dir>', 'write <dir>/<job>/<target>.npy scores, .md/.json table and .svg ROC')
      .option('--job <name>', 'method name in the table', 'pfc')
      .option('--no-norm-score', 'L2-normalise each image feature (N0) instead of keeping its norm (N1)')
      .option('--no-detector-score', 'do not weight image features by the detector score (D0)')
      .option('--skip-missing', 'skip (and count) missing images instead of failing')
      .option('--warp <mode>', "'opencv' (fixed-point, as cv2.warpAffine) or 'float' (exact bilinear)", 'opencv'),
  )
    .addHelpText(
      'after',
      `
Examples:
  pfc-eval ijb --root /data/IJB_release/IJBC --target IJBC --model glint360k_r100.onnx --result-dir results --job r100
  pfc-eval ijb --root /data/IJB_release/IJBB --target IJBB --model model.safetensors --no-detector-score --json
  pfc-eval ijb --root synth_ijb --target IJBC --model mbf.onnx --skip-missing`,
    )
    .action(async (o: ModelOpts & { root: string; target: string; resultDir?: string; job: string; flip: boolean; normScore: boolean; detectorScore: boolean; skipMissing?: boolean; warp: string; json?: boolean }) => {
      const target = o.target.toUpperCase();
      if (target !== 'IJBC' && target !== 'IJBB') throw new PfcError('E_ARGUMENT', `--target must be IJBC or IJBB, got '${o.target}'`);
      if (o.warp !== 'opencv' && o.warp !== 'float') throw new PfcError('E_ARGUMENT', `--warp must be opencv or float, got '${o.warp}'`);
      if (!o.model) throw new PfcError('E_ARGUMENT', 'ijb needs --model <file.onnx|file.safetensors>');
      const embedder = await loadModelEmbedder(o, err);
      const r = await evaluateIjb(o.root, target as IjbTarget, embedder, {
        batchSize: o.batchSize,
        flip: o.flip,
        normScore: o.normScore,
        detectorScore: o.detectorScore,
        skipMissing: o.skipMissing === true,
        mode: o.warp,
        job: o.job,
        stream: io.stderr,
        ...(o.resultDir ? { resultDir: o.resultDir } : {}),
        ...(o.json ? { progress: false as const } : {}),
      });
      await embedder.dispose?.();
      if (o.json) {
        out(JSON.stringify({
          target, method: r.table.method, mode: r.table.mode, fars: r.table.fars, tar: r.table.tar, tarFraction: r.table.readings.map((x) => x.tar), auc: r.table.auc,
          images: r.images, templates: r.templates, pairs: r.pairs, skipped: r.skipped.length, skippedImages: r.skipped, imagesPerSecond: r.imagesPerSecond, files: r.files,
        }));
      } else {
        out(r.text);
        out(`AUC ${(r.table.auc * 100).toFixed(4)} %; ${r.images} images, ${r.templates} templates, ${r.pairs} pairs; ${r.imagesPerSecond.toFixed(1)} img/s`);
        if (r.files.length) out(`wrote ${r.files.join(', ')}`);
      }
    });

  program
    .command('roc')
    .description('ROC, AUC and the TAR@FAR table from saved scores and labels (as the reference reads them)')
    .argument('<scores.npy>', 'scores [n], higher = more similar')
    .argument('<labels.npy>', 'labels [n], 1 genuine / 0 impostor')
    .option('--method <name>', 'row label', 'scores')
    .option('--svg <file>', 'write the ROC curve as SVG')
    .option('--json', 'print one JSON object on stdout')
    .addHelpText(
      'after',
      `
Examples:
  pfc-eval roc results/r100/ijbc.npy meta/ijbc_labels.npy --method r100-IJBC
  pfc-eval roc scores.npy labels.npy --svg roc.svg --json`,
    )
    .action((scoresPath: string, labelsPath: string, o: { method: string; svg?: string; json?: boolean }) => {
      const scores = npyToFloat64(readNpy(scoresPath));
      const labels = npyToFloat64(readNpy(labelsPath));
      if (scores.length !== labels.length) throw new PfcError('E_ARGUMENT', `${scoresPath} has ${scores.length} scores but ${labelsPath} has ${labels.length} labels`);
      const { table, roc } = ijbTable(scores, labels, o.method, '-');
      if (o.svg) writeFileSync(o.svg, rocSvg([{ roc, label: o.method, auc: table.auc }], 'ROC'));
      if (o.json) {
        out(JSON.stringify({ method: o.method, fars: table.fars, tar: table.tar, tarFraction: table.readings.map((x) => x.tar), fprAtPoint: table.readings.map((x) => x.fprAtPoint), auc: table.auc, rocPoints: roc.fpr.length, ...(o.svg ? { svg: o.svg } : {}) }));
      } else {
        out(formatIjbTable([table]));
        out(`AUC ${(table.auc * 100).toFixed(4)} %; ${roc.fpr.length} ROC points${o.svg ? `; wrote ${o.svg}` : ''}`);
      }
    });
  return program;
}

/**
 * Runs the CLI with `argv` (without the node and script entries). Resolves to the exit code; errors are printed
 * as `error [E_CODE]: message` (or a JSON object with `--json`).
 */
export async function main(argv: string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const program = createProgram(io);
  program.exitOverride();
  for (const c of program.commands) c.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    const ce = e as { code?: string; exitCode?: number };
    if (typeof ce.code === 'string' && ce.code.startsWith('commander.')) return ce.exitCode ?? 1;
    const code = PfcError.is(e) ? e.code : 'E_INTERNAL';
    const msg = (e as Error).message;
    if (argv.includes('--json')) io.stdout.write(`${JSON.stringify({ error: { code, message: msg } })}\n`);
    io.stderr.write(`error [${code}]: ${msg}\n`);
    return 1;
  }
}

/** Whether this file is the process entry (works in the CJS and ESM builds and under tsx). */
function isEntryPoint(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(__filename);
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
