#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { PfcError, Progress } from '@pfc/core';
import { FolderFaceDataset } from './dataset';
import { RecordIOReader, idxPathFor } from './recordio';
import { inspectRec, packFolder, rebuildIndex, unpackRec, verifyRec, writeSynthRec } from './tools';

/** Where the CLI writes; tests pass buffers. */
export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  /** Progress on stderr (default true: a bar on a TTY, plain lines otherwise); false for none. */
  progress?: boolean;
}

const defaultIo: CliIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
};

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new CommanderError(2, 'pfc-data.argument', `expected a positive integer, got '${v}'`);
  return n;
}

function countRecords(rec: string): number {
  try {
    const r = new RecordIOReader(rec, { badIndex: 'drop' });
    r.close();
    return r.length;
  } catch {
    return 0;
  }
}

/**
 * The `pfc-data` program. `exitCode` receives what the process should exit with (1 when `verify` finds problems).
 */
export function createProgram(io: CliIo = defaultIo, exitCode: { code: number } = { code: 0 }): Command {
  const progress = (total: number, label: string) =>
    io.progress === false ? null : new Progress({ total, label, unit: 'img' });
  const program = new Command('pfc-data')
    .description('MXNet RecordIO face datasets: pack, inspect, verify, index, synth, unpack')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride()
    .showHelpAfterError()
    .addHelpText('after', '\nExamples:\n  $ pfc-data synth data/train --identities 1000 --per-identity 20\n  $ pfc-data verify data/train.rec --size 112x112\n  $ pfc-data pack --help');

  program
    .command('pack')
    .description('pack an image folder (one sub-folder per identity) into <out-prefix>.rec/.idx with the InsightFace header record')
    .argument('<image-folder>', 'folder of identity sub-folders holding aligned 112x112 JPEG/PNG faces')
    .argument('<out-prefix>', 'output prefix: writes <out-prefix>.rec, <out-prefix>.idx and a property file')
    .option('--no-check', 'do not decode each image before packing it')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  $ pfc-data pack ./faces ./data/train\n  $ pfc-data pack ./faces ./data/train --json')
    .action(async (folder: string, prefix: string, o: { check: boolean; json?: boolean }) => {
      const res = await packFolder(folder, prefix, { check: o.check, progress: progress(new FolderFaceDataset(folder).length, 'pack') });
      io.out(o.json ? `${JSON.stringify(res)}\n` : `packed ${res.images} images of ${res.identities} identities into ${res.rec} (${res.bytes} bytes) and ${res.idx}${res.emptyIdentities ? `; ${res.emptyIdentities} empty identity folder(s) kept as identities with no image` : ''}\n`);
    });

  program
    .command('inspect')
    .description('summarise a .rec: records, layout, identities, images per identity')
    .argument('<rec>', 'the .rec file (or a folder holding train.rec)')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExamples:\n  $ pfc-data inspect faces_emore/train.rec\n  $ pfc-data inspect data/ --json')
    .action(async (rec: string, o: { json?: boolean }) => {
      const r = await inspectRec(rec);
      if (o.json) {
        io.out(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      const lines = [
        `file        ${r.rec}${r.indexed ? '' : ' (no .idx: scanned)'}`,
        `layout      ${r.layout === 'insightface-header' ? 'InsightFace (header record 0)' : 'plain im2rec (no header record)'}`,
        `records     ${r.records}`,
        `images      ${r.images}`,
        `identities  ${r.numClasses ?? '?'} declared, ${r.classesSeen} seen in labels${r.identityRecords ? `, ${r.identityRecords} identity records` : ''}`,
        `per identity min ${r.imagesPerIdentity.min}, max ${r.imagesPerIdentity.max}, mean ${r.imagesPerIdentity.mean.toFixed(2)}`,
        ...Object.entries(r.imagesPerIdentity.histogram).map(([k, v]) => `  ${k.padStart(12)} images: ${v} identities`),
        `first image ${r.firstImage ? `${r.firstImage.format} ${r.firstImage.width}x${r.firstImage.height}` : 'does not decode'}`,
      ];
      io.out(`${lines.join('\n')}\n`);
    });

  program
    .command('verify')
    .description('read every record and decode every image; list each problem by key and byte offset; exit 1 if any')
    .argument('<rec>', 'the .rec file')
    .option('--size <HxW>', 'also require this image size, e.g. 112x112')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExamples:\n  $ pfc-data verify train.rec\n  $ pfc-data verify train.rec --size 112x112 --json')
    .action(async (rec: string, o: { size?: string; json?: boolean }) => {
      let imageSize: [number, number] | undefined;
      if (o.size !== undefined) {
        const m = /^(\d+)x(\d+)$/.exec(o.size);
        if (!m) throw new CommanderError(2, 'pfc-data.argument', `--size must be HxW, got '${o.size}'`);
        imageSize = [Number(m[1]), Number(m[2])];
      }
      const r = await verifyRec(rec, { ...(imageSize ? { imageSize } : {}), progress: progress(countRecords(rec), 'verify') });
      if (o.json) io.out(`${JSON.stringify(r, null, 2)}\n`);
      else {
        for (const p of r.problems) io.out(`${p.code}\tkey ${p.key ?? '-'}\toffset ${p.offset}\t${p.message}\n`);
        io.out(`${r.rec}: ${r.records} records scanned, ${r.images} images checked, ${r.problems.length} problem(s)\n`);
      }
      if (r.problems.length > 0) exitCode.code = 1;
    });

  program
    .command('index')
    .description('rebuild a lost .idx by scanning the .rec (keys from the record headers)')
    .argument('<rec>', 'the .rec file')
    .option('-o, --out <idx>', 'where to write the .idx (default beside the .rec)')
    .addHelpText('after', '\nExamples:\n  $ pfc-data index train.rec\n  $ pfc-data index train.rec -o /tmp/train.idx')
    .action((rec: string, o: { out?: string }) => {
      const r = rebuildIndex(rec, o.out ?? idxPathFor(rec));
      io.out(`wrote ${r.idx} (${r.records} records)\n`);
    });

  program
    .command('synth')
    .description('write a learnable synthetic face set (smooth random identities, jittered views) as .rec/.idx')
    .argument('<out-prefix>', 'output prefix: writes <out-prefix>.rec/.idx and a property file')
    .requiredOption('--identities <N>', 'number of identities', positiveInt)
    .requiredOption('--per-identity <K>', 'images per identity', positiveInt)
    .option('--seed <s>', 'dataset seed', (v) => Number(v), 0)
    .option('--quality <q>', 'JPEG quality', (v) => Number(v), 95)
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  $ pfc-data synth data/train --identities 1000 --per-identity 20\n  $ pfc-data synth /tmp/s --identities 10 --per-identity 5 --seed 7')
    .action(async (prefix: string, o: { identities: number; perIdentity: number; seed: number; quality: number; json?: boolean }) => {
      const res = await writeSynthRec(prefix, {
        identities: o.identities,
        perIdentity: o.perIdentity,
        seed: o.seed,
        quality: o.quality,
        progress: progress(o.identities * o.perIdentity, 'synth'),
      });
      io.out(o.json ? `${JSON.stringify(res)}\n` : `wrote ${res.images} images of ${res.identities} identities to ${res.rec}\n`);
    });

  program
    .command('unpack')
    .description('write every image of a .rec to <folder>/<class>/<key>.jpg (bytes unchanged)')
    .argument('<rec>', 'the .rec file')
    .argument('<folder>', 'output folder')
    .addHelpText('after', '\nExamples:\n  $ pfc-data unpack glint360k/train.rec ./glint_images')
    .action((rec: string, folder: string) => {
      const n = new RecordIOReader(rec);
      const total = n.length;
      n.close();
      const count = unpackRec(rec, folder, progress(total, 'unpack'));
      io.out(`wrote ${count} images to ${folder}\n`);
    });

  return program;
}

/**
 * Runs `pfc-data` with `argv` (without node and script) and resolves the exit code: 0 ok, 1 problems found or a
 * `PfcError`, 2 usage errors. Errors are printed with their code.
 */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const exit = { code: 0 };
  const program = createProgram(io, exit);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return exit.code;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof PfcError) {
      io.err(`pfc-data: ${e.code}: ${e.message}\n`);
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
