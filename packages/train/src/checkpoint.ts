import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PfcError, writeFileAtomic } from '@pfc/core';

/** The run position and scalar state stored in every checkpoint's `state.json`. */
export interface CheckpointState {
  format: 'pfc-train-checkpoint';
  version: 1;
  /** Micro-batches done (the reference's global_step). */
  globalStep: number;
  /** Epoch of the next micro-batch. */
  epoch: number;
  /** Index of the next micro-batch within `epoch` (the data position). */
  stepInEpoch: number;
  /** Samples of `epoch` consumed: stepInEpoch · B · W (lets a run with another world size find its position). */
  samplesInEpoch: number;
  worldSize: number;
  batchSize: number;
  /** Scheduler step count. */
  scheduler: { lastEpoch: number };
  /** Optimizer kind and step count (the slots are in `optimizer.safetensors`). */
  optimizer: { kind: string; step: number; slots: string[] };
  numClasses: number;
  embeddingSize: number;
  network: string;
  wallTime: number;
}

/** Name of checkpoint directories: `step-00001234`. */
export function checkpointName(globalStep: number): string {
  return `step-${String(globalStep).padStart(8, '0')}`;
}

/**
 * Atomic checkpoints under `<root>`: each is written into `.tmp-<name>` by every rank, renamed to `<name>` by rank 0
 * once complete, and only then does the `latest` file (written atomically) point to it. A process killed at any
 * moment leaves either the previous checkpoint as `latest` or the new one, never a torn one; stale `.tmp-*`
 * directories are removed at the next start.
 *
 * Checkpoints hold no random generator state of their own: the data order and flips are a function of (seed, epoch,
 * position), and the only generator that advances during training, Partial FC's class sampling, is saved per rank
 * with the bank in `head/` (by `@pfc/partial-fc`). So a resume with the same world size continues exactly.
 */
export class CheckpointManager {
  constructor(
    readonly root: string,
    readonly keep = 2,
  ) {}

  /** Directory of the newest complete checkpoint, or null. */
  latest(): string | null {
    const p = join(this.root, 'latest');
    if (!existsSync(p)) return null;
    const name = readFileSync(p, 'utf8').trim();
    const dir = join(this.root, name);
    // A commit that re-wrote this name was cut between moving the old copy aside and moving the new one in.
    const aside = join(this.root, `.old-${name}`);
    if (!existsSync(join(dir, 'state.json')) && existsSync(join(aside, 'state.json'))) return aside;
    if (!existsSync(join(dir, 'state.json'))) {
      throw new PfcError('E_CHECKPOINT', `${p} points to ${name}, which has no state.json`, { details: { file: p } });
    }
    return dir;
  }

  /** Reads and checks a checkpoint's `state.json`. */
  readState(dir: string): CheckpointState {
    const file = join(dir, 'state.json');
    let s: CheckpointState;
    try {
      s = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new PfcError('E_CHECKPOINT', `${file}: cannot read: ${(err as Error).message}`, { cause: err, details: { file } });
    }
    if (s.format !== 'pfc-train-checkpoint' || s.version !== 1) {
      throw new PfcError('E_CHECKPOINT', `${file}: not a pfc-train checkpoint (format ${JSON.stringify(s.format)}, version ${s.version})`, { details: { file } });
    }
    return s;
  }

  /**
   * Removes leftovers of interrupted writes (call on rank 0 before training): `.tmp-*` directories, and `.old-<name>`
   * copies of replaced checkpoints, which are moved back to `<name>` when the replacement never arrived.
   */
  cleanStale(): void {
    if (!existsSync(this.root)) return;
    for (const f of readdirSync(this.root)) {
      if (f.startsWith('.tmp-')) rmSync(join(this.root, f), { recursive: true, force: true });
      else if (f.startsWith('.old-')) this.settle(f.slice('.old-'.length));
    }
  }

  /** Resolves a leftover `.old-<name>`: dropped when `<name>` is complete, else moved back to `<name>`. */
  private settle(name: string): void {
    const aside = join(this.root, `.old-${name}`);
    if (!existsSync(aside)) return;
    const dir = join(this.root, name);
    if (existsSync(join(dir, 'state.json'))) {
      rmSync(aside, { recursive: true, force: true });
    } else {
      rmSync(dir, { recursive: true, force: true });
      renameSync(aside, dir);
    }
  }

  /** The temporary directory every rank writes checkpoint `globalStep` into (created). */
  begin(globalStep: number): string {
    const dir = join(this.root, `.tmp-${checkpointName(globalStep)}`);
    mkdirSync(dir, { recursive: true });
    return dir;
  }

  /**
   * Rank 0, after every rank has written: writes `state.json`, renames the temporary directory into place, points
   * `latest` to it and deletes checkpoints beyond `keep`. A checkpoint of the same name (a resumed run passing the
   * same step again) is first renamed to `.old-<name>` and deleted only after the new one is in place, so a process
   * killed in between still finds a complete checkpoint ({@link latest} and {@link cleanStale} take the old copy).
   * @returns the final directory
   */
  commit(globalStep: number, state: CheckpointState): string {
    const name = checkpointName(globalStep);
    const tmp = join(this.root, `.tmp-${name}`);
    writeFileAtomic(join(tmp, 'state.json'), new TextEncoder().encode(`${JSON.stringify(state, null, 1)}\n`));
    const dir = join(this.root, name);
    const aside = join(this.root, `.old-${name}`);
    this.settle(name);
    if (existsSync(dir)) renameSync(dir, aside);
    renameSync(tmp, dir);
    writeFileAtomic(join(this.root, 'latest'), new TextEncoder().encode(`${name}\n`));
    rmSync(aside, { recursive: true, force: true });
    const all = readdirSync(this.root)
      .filter((f) => /^step-\d{8}$/.test(f))
      .sort();
    for (const old of all.slice(0, Math.max(0, all.length - this.keep))) if (old !== name) rmSync(join(this.root, old), { recursive: true, force: true });
    return dir;
  }
}

/** Writes a small JSON file (not atomic; used inside a checkpoint's temporary directory). */
export function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value)}\n`);
}
