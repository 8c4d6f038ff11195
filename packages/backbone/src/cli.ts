#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import { MAX_WASM_THREADS, PfcError, initBackend, processWasmThreads, readFileOrThrow, readNpy, writeFileAtomic, writeNpy } from '@pfc/core';
import type { BackendName } from '@pfc/core';
import { resolveConfig } from './arch';
import type { BackboneConfig } from './arch';
import { exportOnnx, importOnnx } from './onnx/onnx';
import { encodeSafetensors, readSafetensors } from './safetensors';
import { summary } from './summary';
import { NETWORK_METADATA_KEY, inferConfigFromState, loadWeights } from './weights';

/** Where the CLI writes; tests pass buffers. */
export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
}

const defaultIo: CliIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
};

/** A network name (`r50`) or a JSON config (`{"name":"iresnet","layers":[1,1,1,1],...}`). */
function parseNetwork(v: string): string | BackboneConfig {
  if (v.trim().startsWith('{')) {
    try {
      return JSON.parse(v) as BackboneConfig;
    } catch {
      throw new CommanderError(2, 'pfc-backbone.network', `--network: not valid JSON: ${v}`);
    }
  }
  return v;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new CommanderError(2, 'pfc-backbone.argument', `expected a positive integer, got '${v}'`);
  return n;
}

function wasmThreadsArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > MAX_WASM_THREADS) throw new CommanderError(2, 'pfc-backbone.argument', `--threads must be an integer from 1 to ${MAX_WASM_THREADS}, got '${v}'`);
  return n;
}

const isOnnx = (p: string) => p.toLowerCase().endsWith('.onnx');

/** Reads a safetensors file's state and the network it holds (option, metadata, or inferred from names). */
function readSafetensorsNetwork(path: string, network?: string | BackboneConfig) {
  const { tensors, metadata } = readSafetensors(path);
  const meta = metadata[NETWORK_METADATA_KEY];
  const cfg = network !== undefined ? resolveConfig(network) : meta ? resolveConfig(JSON.parse(meta) as BackboneConfig) : inferConfigFromState(tensors, path);
  return { cfg, tensors };
}

/** The `pfc-backbone` program. */
export function createProgram(io: CliIo = defaultIo): Command {
  const program = new Command('pfc-backbone')
    .description('iResNet / MobileFaceNet face backbones: sizes, safetensors and ONNX conversion, inference')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride()
    .showHelpAfterError();

  program
    .command('summary')
    .description('parameters and multiply-accumulates of a network at its input size (112x112 for the reference networks)')
    .argument('<network>', 'r18, r34, r50, r100, r200, mbf, mbf_large, or a JSON config')
    .option('--json', 'print JSON')
    .addHelpText('after', `\nExamples:\n  $ pfc-backbone summary r50\n  $ pfc-backbone summary mbf --json\n  $ pfc-backbone summary '{"name":"iresnet","layers":[1,1,1,1],"widths":[16,32,64,128],"embeddingSize":128}'`)
    .action((network: string, o: { json?: boolean }) => {
      const s = summary(parseNetwork(network));
      if (o.json) {
        io.out(`${JSON.stringify({ network: s.network, params: s.params, buffers: s.buffers, macs: s.macs, sizeMiB: s.sizeMiB, inputShape: s.inputShape, embeddingSize: s.embeddingSize, config: s.config })}\n`);
      } else {
        io.out(
          `${s.network}: ${(s.params / 1e6).toFixed(2)} M parameters (${s.sizeMiB.toFixed(1)} MiB fp32), ${(s.macs / 1e9).toFixed(2)} GMACs at ${s.inputShape.join('x')}, embedding ${s.embeddingSize}\n`,
        );
      }
    });

  program
    .command('export-onnx')
    .description('export safetensors weights (reference state-dict names) to ONNX: input "data" [N,3,112,112], output "embedding"')
    .argument('<weights>', '.safetensors file')
    .argument('<out>', '.onnx file to write')
    .option('--network <name>', 'network name or JSON config (default: from the file metadata, else inferred from tensor names)')
    .option('--fold-bn', 'fold BatchNorms that follow convolutions into them')
    .option('--opset <n>', 'ONNX opset (>= 11)', positiveInt, 11)
    .addHelpText('after', '\nExamples:\n  $ pfc-backbone export-onnx model.safetensors model.onnx --network r18\n  $ pfc-backbone export-onnx model.safetensors model.onnx --fold-bn')
    .action((weights: string, out: string, o: { network?: string; foldBn?: boolean; opset: number }) => {
      const { cfg, tensors } = readSafetensorsNetwork(weights, o.network === undefined ? undefined : parseNetwork(o.network));
      writeFileAtomic(out, exportOnnx(cfg, tensors, { foldBatchNorm: o.foldBn ?? false, opset: o.opset }));
      io.out(`wrote ${out}\n`);
    });

  program
    .command('convert')
    .description('convert between .safetensors and .onnx (by file extension)')
    .argument('<in>', '.safetensors or .onnx')
    .argument('<out>', '.onnx or .safetensors')
    .option('--network <name>', 'network of a .safetensors input (default: metadata or inferred)')
    .addHelpText('after', '\nExamples:\n  $ pfc-backbone convert model.safetensors model.onnx\n  $ pfc-backbone convert glint360k_r100.onnx r100.safetensors')
    .action((input: string, out: string, o: { network?: string }) => {
      if (isOnnx(input) === isOnnx(out)) {
        throw new PfcError('E_ARGUMENT', `convert: one of <in> and <out> must be .onnx and the other .safetensors, got ${input} and ${out}`);
      }
      if (isOnnx(input)) {
        const { config, state, folded } = importOnnx(readFileOrThrow(input, 'E_ONNX'), input);
        writeFileAtomic(out, encodeSafetensors(state, { format: 'pt', [NETWORK_METADATA_KEY]: JSON.stringify(config) }));
        io.out(`wrote ${out}${folded ? ' (the graph had BatchNorms folded into convolutions: loaded as identity BatchNorms carrying the bias)' : ''}\n`);
      } else {
        const { cfg, tensors } = readSafetensorsNetwork(input, o.network === undefined ? undefined : parseNetwork(o.network));
        writeFileAtomic(out, exportOnnx(cfg, tensors));
        io.out(`wrote ${out}\n`);
      }
    });

  program
    .command('run')
    .description('embed images: NCHW float32 [N,3,S,S] in [-1,1] from .npy, raw embeddings [N,E] float32 to .npy (inference mode)')
    .argument('<weights>', '.safetensors or .onnx')
    .requiredOption('--input <x.npy>', 'images, float32 NCHW in [-1, 1] ((x/255 - 0.5)/0.5, RGB)')
    .requiredOption('--out <y.npy>', 'where to write the embeddings')
    .option('--network <name>', 'network of a .safetensors file (default: metadata or inferred)')
    .option('--batch-size <n>', 'images per forward pass', positiveInt, 32)
    .option('--backend <name>', 'tensor backend (default: PFC_BACKEND or the best available)')
    .option('--threads <n>', 'wasm backend threads, 1-8 (default: PFC_WASM_THREADS, else the cores)', wasmThreadsArg)
    .addHelpText(
      'after',
      '\nExamples:\n  $ pfc-backbone run model.safetensors --input faces.npy --out emb.npy\n  $ pfc-backbone run model.onnx --input faces.npy --out emb.npy --backend wasm --threads 4',
    )
    .action(async (weights: string, o: { input: string; out: string; network?: string; batchSize: number; backend?: string; threads?: number }) => {
      await initBackend({ backend: o.backend as BackendName | undefined, threads: o.threads ?? processWasmThreads(), log: (m) => io.err(`${m}\n`) });
      const x = readNpy(o.input);
      const model = loadWeights(weights, o.network === undefined ? undefined : parseNetwork(o.network));
      try {
        const S = model.config.inputSize;
        if (x.shape.length !== 4 || x.shape[1] !== 3 || x.shape[2] !== S || x.shape[3] !== S) {
          throw new PfcError('E_SHAPE', `${o.input}: images must be NCHW [N, 3, ${S}, ${S}], got [${x.shape.join(', ')}]`, { details: { actual: x.shape, expected: [-1, 3, S, S] } });
        }
        if (x.dtype !== 'f4' && x.dtype !== 'f8') throw new PfcError('E_SHAPE', `${o.input}: images must be float32, got dtype ${x.dtype}`);
        const n = x.shape[0]!;
        const per = 3 * S * S;
        const E = model.embeddingSize;
        const out = new Float32Array(n * E);
        for (let start = 0; start < n; start += o.batchSize) {
          const b = Math.min(o.batchSize, n - start);
          const chunk = Float32Array.from((x.data as Float32Array | Float64Array).subarray(start * per, (start + b) * per));
          const emb = tf.tidy(() => model.apply(tf.transpose(tf.tensor4d(chunk, [b, 3, S, S]), [0, 2, 3, 1])));
          out.set(await emb.data(), start * E);
          emb.dispose();
        }
        writeNpy(o.out, out, [n, E], 'f4');
        io.out(`wrote ${o.out} [${n}, ${E}]\n`);
      } finally {
        model.dispose();
      }
    });
  return program;
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = createProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof PfcError) {
      io.err(`pfc-backbone: ${e.code}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
