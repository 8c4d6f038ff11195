#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { PfcError } from '@pfc/core';
import { checkVectors } from './vectors';

/** Where the CLI writes; replaceable in tests. */
export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

const defaultIo: CliIo = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

function worldSizes(value: string): number[] {
  const ws = value.split(',').map((x) => Number(x.trim()));
  if (ws.length === 0 || ws.some((w) => !Number.isInteger(w) || w < 1)) {
    throw new InvalidArgumentError(`expected a comma-separated list of positive integers such as 1,2; got ${JSON.stringify(value)}`);
  }
  return ws;
}

function oneOf<T extends string>(choices: readonly T[]) {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${choices.join(', ')}; got ${JSON.stringify(value)}`);
    return value as T;
  };
}

/**
 * The `pfc-partial-fc` program. `exit` receives the process exit code (0 = within tolerance, 1 = above or failed,
 * 2 = usage error).
 */
export function createProgram(io: CliIo = defaultIo, exit: (code: number) => void = () => {}): Command {
  const program = new Command('pfc-partial-fc')
    .description('Partial FC tools: check this implementation against reference vectors.')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride();
  program
    .command('check-vectors')
    .description(
      'Run our Partial FC on a reference vector directory (input/spec.json + .npy, <dtype>/ws<N>/...) with its injected ' +
        'sampling keys or forced index, and print ONE JSON object with the max abs error of the loss, embedding and ' +
        'bank gradients, cos/margin logits, sampled-set equality and (when the spec has an SGD step) the updated weight. ' +
        'Exit code 1 when any error is above tolerance.',
    )
    .argument('<dir>', 'vector directory, e.g. vectors/pfc/arcface_small')
    .option('--dtype <dtype>', 'which reference run to compare with: float32 | float64', oneOf(['float32', 'float64'] as const), 'float32')
    .option('--world-size <list>', 'world sizes to run, comma-separated (default: every ws<N> present)', worldSizes)
    .option('--update <mode>', 'bank update for the SGD check: sparse | dense (dense = reference V2)', oneOf(['sparse', 'dense'] as const), 'dense')
    .option('--backend <name>', 'how ranks run: local (in-thread) | threads (worker threads) | mpi (one rank per mpirun process)', oneOf(['local', 'threads', 'mpi'] as const), 'local')
    .option('--tensor-backend <name>', 'tfjs backend of the float32 matmuls: cpu | wasm', oneOf(['cpu', 'wasm'] as const), 'cpu')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  pfc-partial-fc check-vectors vectors/pfc/arcface_small',
        '  pfc-partial-fc check-vectors vectors/pfc/cosface_small --dtype float64 --world-size 1,2',
        '  pfc-partial-fc check-vectors my-vectors/run1 --backend threads --update sparse',
        '  mpirun -np 2 npx pfc-partial-fc check-vectors vectors/pfc/arcface_small --backend mpi   # rank 0 prints',
      ].join('\n'),
    )
    .action(async (dir: string, opts: { dtype: 'float32' | 'float64'; worldSize?: number[]; update: 'sparse' | 'dense'; backend: 'local' | 'threads' | 'mpi'; tensorBackend: 'cpu' | 'wasm' }) => {
      const report = await checkVectors(dir, {
        dtype: opts.dtype,
        update: opts.update,
        backend: opts.backend,
        tensorBackend: opts.tensorBackend,
        ...(opts.worldSize ? { worldSizes: opts.worldSize } : {}),
      });
      if (report.rank === 0) io.out(`${JSON.stringify(report, null, 1)}\n`);
      exit(report.pass ? 0 : 1);
    });
  return program;
}

/**
 * Runs the CLI on `argv` (without the node and script entries) and resolves to the exit code.
 */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  let code = 0;
  const program = createProgram(io, (c) => {
    code = c;
  });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof PfcError) {
      io.err(`pfc-partial-fc: ${err.code}: ${err.message}\n`);
      return 1;
    }
    io.err(`pfc-partial-fc: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
