#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { PfcError, type BackendName } from '@pfc/core';
import { formatConfig, loadConfig, parseOverrides } from './config';
import { launchBackendFromEnv, launchTraining, type LaunchBackend } from './launch';

const BACKENDS: readonly LaunchBackend[] = ['threads', 'local', 'mpi', 'nccl'];

function backendArg(v: string): LaunchBackend {
  if (!(BACKENDS as readonly string[]).includes(v)) throw new InvalidArgumentError(`--backend must be one of ${BACKENDS.join(', ')}, got '${v}'`);
  return v as LaunchBackend;
}

function int(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got '${v}'`);
    return n;
  };
}

/**
 * The `pfc-train` program (commander). `main(argv)` parses and runs it; exported for tests.
 * @param out where normal output goes
 */
export function createProgram(out: (s: string) => void = (s) => process.stdout.write(s)): Command {
  const program = new Command('pfc-train');
  program
    .description('Data-parallel Partial FC face-recognition training (the reference arcface_torch train_v2.py).')
    .requiredOption('-c, --config <file>', 'config file: .json, or a .ts/.js module whose default export is the config (reference field names)')
    .option('--resume', 'continue from <output>/checkpoints/latest (another world size re-shards the bank)')
    .option(
      '--backend <backend>',
      'how ranks run: threads | local | mpi | nccl (mpi/nccl: one rank per process under mpirun). Default: $PFC_COLLECTIVE if set, else mpi when started by mpirun/srun, else threads',
      backendArg,
    )
    .option('--world-size <n>', 'number of data-parallel ranks for threads/local (default 1); under mpirun the -np of the job (must match if given)', int('--world-size'))
    .option('--tensor-backend <name>', 'tensor backend per rank: tensorflow-gpu | tensorflow | wasm | cpu (default: best available)')
    .option('--rec <dir>', 'override the config field rec')
    .option('--output <dir>', 'override the config field output')
    .option('--max-steps <n>', 'stop after this global step (a short run)', int('--max-steps'))
    .option('--set <field=value...>', 'override config fields (JSON values), e.g. --set batch_size=64 lr=0.2')
    .option('-q, --quiet', 'no log lines')
    .addHelpText(
      'after',
      `
Examples:
  pfc-train --config job.json --world-size 2                        # 2 worker-thread ranks
  pfc-train --config src/config.ts --backend local --world-size 2 --set batch_size=32 num_epoch=1
  pfc-train --config job.json --resume --world-size 4               # resume with 4 ranks (bank re-sharded)
  mpirun -np 8 pfc-train --config job.json --tensor-backend tensorflow-gpu   # 8 MPI ranks (picked from the environment)
  mpirun -np 8 pfc-train --config job.json --backend nccl           # NCCL collectives, bootstrapped over MPI

Outputs (config field output): training.log lines on stdout, tensorboard/ event files, checkpoints/ (atomic, every
epoch and every checkpoint_steps; 'latest' names the newest complete one), model.safetensors and model.onnx.`,
    )
    .action(async (opts: Record<string, unknown>) => {
      const overrides = parseOverrides((opts.set as string[] | undefined) ?? [], 'pfc-train');
      if (opts.rec) overrides.rec = opts.rec;
      if (opts.output) overrides.output = opts.output;
      if (opts.resume) overrides.resume = true;
      const config = loadConfig(opts.config as string, overrides);
      // Under mpirun every process runs this; only the first lists the config.
      const launchRank = Number(process.env.OMPI_COMM_WORLD_RANK ?? process.env.PMI_RANK ?? process.env.PMIX_RANK ?? process.env.PFC_RANK ?? 0);
      const backend = (opts.backend as LaunchBackend | undefined) ?? launchBackendFromEnv();
      if (!opts.quiet && launchRank === 0) out(`${formatConfig(config).join('\n')}\n`);
      const hang = process.env.PFC_TRAIN_HANG_IN_CHECKPOINT;
      const results = await launchTraining(
        {
          config,
          ...(opts.tensorBackend ? { tensorBackend: opts.tensorBackend as BackendName } : {}),
          ...(opts.maxSteps ? { maxSteps: opts.maxSteps as number } : {}),
          ...(opts.quiet ? { quiet: true } : {}),
          ...(hang ? { hangInCheckpointAt: Number(hang) } : {}),
        },
        { backend, ...(opts.worldSize !== undefined ? { worldSize: opts.worldSize as number } : {}) },
      );
      const r = results[0]!;
      if (!opts.quiet && r.rank === 0) {
        out(`finished at global step ${r.globalStep} (started at ${r.startStep}) on ${r.worldSize} rank(s), backend ${backend}; outputs in ${config.output}\n`);
      }
    });
  return program;
}

/** Runs `pfc-train` with `argv` (without the node and script entries); resolves to the exit code. */
export async function main(argv: string[], out?: (s: string) => void, err: (s: string) => void = (s) => process.stderr.write(s)): Promise<number> {
  const program = createProgram(out);
  program.exitOverride();
  program.configureOutput({ writeOut: out ?? ((s) => process.stdout.write(s)), writeErr: err });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') return 0;
    if (typeof code === 'string' && code.startsWith('commander.')) return 2;
    err(`pfc-train: ${e instanceof PfcError ? `${e.code}: ` : ''}${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
