import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PfcError, Rng, fromFloat16Bits, writeFileAtomic } from '@pfc/core';
import type { BankStorage } from './bank';
import type { PartialFC } from './partial-fc';

/** `manifest.json` of a bank checkpoint directory. */
export interface BankManifest {
  format: 'pfc-partial-fc-bank';
  version: 1;
  numClasses: number;
  embeddingSize: number;
  storage: BankStorage;
  step: number;
  seed: number;
  /** World size at save time; sampling generator states are restored only when it matches. */
  worldSize: number;
  /** One entry per saved rank shard, in class order: rows [classStart, classStart + numLocal). */
  shards: { classStart: number; numLocal: number; weight: string; momentum: string; rng: number[] }[];
}

const DESCR: Record<BankStorage, string> = { float16: '<f2', float32: '<f4', float64: '<f8' };
const BYTES: Record<string, number> = { '<f2': 2, '<f4': 4, '<f8': 8 };

function npyHeader(descr: string, rows: number, cols: number): Uint8Array {
  let h = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  const total = 10 + h.length + 1;
  h += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + h.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(out.buffer).setUint16(8, h.length, true);
  for (let i = 0; i < h.length; i++) out[10 + i] = h.charCodeAt(i);
  return out;
}

/**
 * Shard file name. The step is part of it, so saving into a directory that holds an earlier checkpoint never
 * overwrites a file its manifest still names: until the new manifest replaces the old one, the old checkpoint is
 * whole.
 */
function shardFile(classStart: number, kind: 'weight' | 'momentum', step: number): string {
  return `${kind}-${String(classStart).padStart(10, '0')}-step${step}.npy`;
}

const SHARD_FILE = /^(weight|momentum)-\d{10}(-step\d+)?\.npy$/;

function bad(dir: string, msg: string, details: Record<string, unknown> = {}): PfcError {
  return new PfcError('E_CHECKPOINT', `checkpoint ${dir}: ${msg}`, { details: { dir, ...details } });
}

/**
 * Saves the bank of every rank (collective): each rank writes its shard's weights and momentum as `.npy` files named
 * by their first class id and the step, then rank 0 writes `manifest.json` and removes the shard files the new
 * manifest does not name. All writes are atomic (temp file + rename) and no file of the previous checkpoint is
 * overwritten before the manifest is, so a crash mid-save leaves the previous checkpoint whole.
 */
export async function saveBank(pfc: PartialFC, dir: string): Promise<void> {
  const { comm, bank } = pfc;
  mkdirSync(dir, { recursive: true });
  const d = pfc.embeddingSize;
  for (const kind of ['weight', 'momentum'] as const) {
    const chunks: Uint8Array[] = [npyHeader(DESCR[bank.storage], pfc.numLocal, d)];
    for (const c of kind === 'weight' ? bank.weightChunks() : bank.momentumChunks()) chunks.push(new Uint8Array(c.buffer, c.byteOffset, c.byteLength));
    writeFileAtomic(join(dir, shardFile(pfc.classStart, kind, pfc.stepCount)), chunks);
  }
  const st = pfc.rng.getState();
  const mine = Float64Array.of(pfc.classStart, pfc.numLocal, ...st.s);
  const all = await comm.allGather(mine);
  await comm.barrier();
  if (comm.rank === 0) {
    const shards: BankManifest['shards'] = [];
    for (let r = 0; r < comm.worldSize; r++) {
      const cs = all[r * 6]!;
      shards.push({ classStart: cs, numLocal: all[r * 6 + 1]!, weight: shardFile(cs, 'weight', pfc.stepCount), momentum: shardFile(cs, 'momentum', pfc.stepCount), rng: Array.from(all.subarray(r * 6 + 2, r * 6 + 6)) });
    }
    const manifest: BankManifest = {
      format: 'pfc-partial-fc-bank',
      version: 1,
      numClasses: pfc.numClasses,
      embeddingSize: d,
      storage: bank.storage,
      step: pfc.stepCount,
      seed: pfc.seed,
      worldSize: comm.worldSize,
      shards,
    };
    writeFileAtomic(join(dir, 'manifest.json'), new TextEncoder().encode(`${JSON.stringify(manifest, null, 1)}\n`));
    const named = new Set(shards.flatMap((sh) => [sh.weight, sh.momentum]));
    for (const f of readdirSync(dir)) if (SHARD_FILE.test(f) && !named.has(f)) rmSync(join(dir, f), { force: true });
  }
  await comm.barrier();
}

/** Reads rows [row0, row0+count) of a 2-D `.npy` file [rows, cols] of `<f2|<f4|<f8` as float64. */
function readRows(path: string, dir: string, cols: number, expectRows: number, row0: number, count: number): Float64Array {
  if (!existsSync(path)) throw bad(dir, `shard file ${path} is missing`, { file: path });
  const fd = openSync(path, 'r');
  try {
    const pre = new Uint8Array(10);
    readSync(fd, pre, 0, 10, 0);
    if (pre[0] !== 0x93 || String.fromCharCode(...pre.subarray(1, 6)) !== 'NUMPY') throw bad(dir, `${path} is not a .npy file (byte offset 0)`, { file: path });
    const major = pre[6]!;
    const lenBytes = major === 1 ? 2 : 4;
    const lb = new Uint8Array(4);
    readSync(fd, lb, 0, lenBytes, 8);
    const hlen = major === 1 ? lb[0]! | (lb[1]! << 8) : new DataView(lb.buffer).getUint32(0, true);
    const hdr = new Uint8Array(hlen);
    readSync(fd, hdr, 0, hlen, 8 + lenBytes);
    const text = new TextDecoder().decode(hdr);
    const descr = /'descr':\s*'([^']+)'/.exec(text)?.[1] ?? '';
    const shape = (/'shape':\s*\(([^)]*)\)/.exec(text)?.[1] ?? '').split(',').map((x) => x.trim()).filter(Boolean).map(Number);
    const size = BYTES[descr];
    if (!size || /True/.test(/'fortran_order':\s*(\w+)/.exec(text)?.[1] ?? '')) throw bad(dir, `${path}: unsupported dtype ${descr} or Fortran order`, { file: path });
    if (shape.length !== 2 || shape[0] !== expectRows || shape[1] !== cols) {
      throw bad(dir, `${path} has shape (${shape.join(', ')}), the manifest says (${expectRows}, ${cols})`, { file: path, shape });
    }
    const dataOff = 8 + lenBytes + hlen;
    const bytes = new Uint8Array(count * cols * size);
    let got = 0;
    while (got < bytes.length) {
      const n = readSync(fd, bytes, got, bytes.length - got, dataOff + row0 * cols * size + got);
      if (n === 0) throw bad(dir, `${path} is truncated at byte offset ${dataOff + row0 * cols * size + got}`, { file: path });
      got += n;
    }
    const out = new Float64Array(count * cols);
    if (size === 2) {
      const h = new Uint16Array(bytes.buffer);
      for (let i = 0; i < out.length; i++) out[i] = fromFloat16Bits(h[i]!);
    } else if (size === 4) out.set(new Float32Array(bytes.buffer));
    else out.set(new Float64Array(bytes.buffer));
    return out;
  } finally {
    closeSync(fd);
  }
}

/**
 * Loads a bank saved by {@link saveBank} with any world size into this rank's shard (collective only in that every
 * rank calls it; no communication). Rows are re-sliced by global class id, so a bank saved with W ranks loads with
 * W' ranks; a different storage type is converted. The step counter is restored, and the sampling generator too when
 * the world size matches. A checkpoint for another numClasses or embeddingSize fails with `E_CHECKPOINT`.
 */
export async function loadBank(pfc: PartialFC, dir: string): Promise<BankManifest> {
  const mpath = join(dir, 'manifest.json');
  if (!existsSync(mpath)) throw bad(dir, 'manifest.json is missing', { file: mpath });
  let manifest: BankManifest;
  try {
    manifest = JSON.parse(readFileSync(mpath, 'utf8')) as BankManifest;
  } catch (err) {
    throw new PfcError('E_CHECKPOINT', `checkpoint ${dir}: manifest.json is not valid JSON`, { cause: err, details: { dir } });
  }
  if (manifest.format !== 'pfc-partial-fc-bank') throw bad(dir, `manifest format ${JSON.stringify(manifest.format)} is not 'pfc-partial-fc-bank'`);
  if (manifest.numClasses !== pfc.numClasses || manifest.embeddingSize !== pfc.embeddingSize) {
    throw bad(
      dir,
      `it holds numClasses ${manifest.numClasses} × embeddingSize ${manifest.embeddingSize}, this PartialFC has ${pfc.numClasses} × ${pfc.embeddingSize}`,
      { numClasses: manifest.numClasses, embeddingSize: manifest.embeddingSize },
    );
  }
  const d = pfc.embeddingSize;
  const lo = pfc.classStart;
  const hi = lo + pfc.numLocal;
  let covered = 0;
  for (const sh of manifest.shards) {
    const a = Math.max(lo, sh.classStart);
    const b = Math.min(hi, sh.classStart + sh.numLocal);
    if (a >= b) continue;
    const step = 4096;
    for (let c = a; c < b; c += step) {
      const n = Math.min(step, b - c);
      const w = readRows(join(dir, sh.weight), dir, d, sh.numLocal, c - sh.classStart, n);
      const m = readRows(join(dir, sh.momentum), dir, d, sh.numLocal, c - sh.classStart, n);
      for (let i = 0; i < n; i++) {
        pfc.bank.writeWeight(c - lo + i, w, i * d);
        pfc.bank.writeMomentum(c - lo + i, m, i * d);
      }
    }
    covered += b - a;
  }
  if (covered !== pfc.numLocal) throw bad(dir, `its shards cover ${covered} of the ${pfc.numLocal} classes of rank ${pfc.comm.rank}`);
  pfc.stepCount = manifest.step;
  const own = manifest.shards.find((s) => s.classStart === lo && s.numLocal === pfc.numLocal);
  if (manifest.worldSize === pfc.comm.worldSize && own) {
    pfc.rng = Rng.fromState({ s: own.rng as [number, number, number, number], spare: null });
  } else {
    pfc.rng = new Rng(pfc.seed).fork(`sampling/rank${pfc.comm.rank}/step${manifest.step}`);
  }
  return manifest;
}
