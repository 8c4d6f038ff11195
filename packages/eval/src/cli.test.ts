import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Rng, initBackend, npyToFloat64, readNpy, writeNpy } from '@pfc/core';
import { main } from './cli';
import { writeIjbProtocol } from './ijb';
import { writeVerificationBin } from './bin';
import { rocCurve } from './roc';
import { maliciousPickles, makeIjbProtocol, rocSvgProblems } from './testing.test-util';
import sharp from 'sharp';

const shared = join(__dirname, '../../../../shared');
const verif = join(shared, 'vectors/eval/verif_600');
const ties = join(shared, 'vectors/eval/ijbc_roc_ties');
const model = join(shared, 'realdata/models/mobilefacenet_128d.onnx');
const smallLfw = join(shared, 'realdata/bin/insightface_small_lfw.bin');
const faces = join(shared, 'realdata/landmarks/faces_5pt.json');

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const so = new PassThrough();
  const se = new PassThrough();
  let stdout = '';
  let stderr = '';
  so.on('data', (d) => (stdout += d));
  se.on('data', (d) => (stderr += d));
  const code = await main(argv, { stdout: so, stderr: se });
  return { code, stdout, stderr };
}

beforeAll(() => initBackend({ backend: 'cpu', log: null }));

describe('pfc-eval CLI', () => {
  it('--help lists the commands and each command has examples', async () => {
    const top = await run(['--help']);
    expect(top.stdout).toMatch(/verification/);
    expect(top.stdout).toMatch(/ijb/);
    expect(top.stdout).toMatch(/roc/);
    expect(top.stdout).toContain('Examples:');
    for (const c of ['verification', 'ijb', 'roc']) {
      const h = await run([c, '--help']);
      expect(h.code).toBe(0);
      expect(h.stdout).toContain('Examples:');
      expect(h.stdout).toContain('--json');
    }
  });

  (existsSync(verif) ? it : it.skip)('verification --embeddings --issame --json equals the reference', async () => {
    const ref = JSON.parse(readFileSync(join(verif, 'result.json'), 'utf8'));
    const r = await run(['verification', '--embeddings', join(verif, 'input/embeddings.npy'), '--issame', join(verif, 'input/issame.npy'), '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    // the CLI L2-normalises the (already unit) embeddings again: float32 round-off stays far below 1e-9 in accuracy
    expect(Math.abs(j.accuracy - ref.accuracy_mean)).toBeLessThan(1e-9);
    expect(Math.abs(j.accuracyStd - ref.accuracy_std)).toBeLessThan(1e-9);
    const text = await run(['verification', '--embeddings', join(verif, 'input/embeddings.npy'), '--issame', join(verif, 'input/issame.npy')]);
    expect(text.stdout).toMatch(/Accuracy-NoFlip: 0\.87500\+-0\.03270/);
  });

  (existsSync(ties) ? it : it.skip)('roc prints the reference row and --json gives the TAR digits', async () => {
    const ref = JSON.parse(readFileSync(join(ties, 'result.json'), 'utf8'));
    const dir = mkdtempSync(join(tmpdir(), 'pfc-cli-roc-'));
    try {
      const r = await run(['roc', join(ties, 'input/scores.npy'), join(ties, 'input/labels.npy'), '--method', 'ijbc-IJBC', '--svg', join(dir, 'roc.svg'), '--json']);
      expect(r.code).toBe(0);
      const j = JSON.parse(r.stdout);
      expect(j.tar).toEqual(ref.tar_at_far_percent_str);
      expect(j.rocPoints).toBe(ref.roc_points);
      // the SVG shows the ROC of these scores: monotone, inside the frame, every point with 1e-6 <= FPR <= 0.1 in place
      const roc = rocCurve(npyToFloat64(readNpy(join(ties, 'input/scores.npy'))), npyToFloat64(readNpy(join(ties, 'input/labels.npy'))));
      expect(roc.fpr.length).toBe(ref.roc_points);
      expect(rocSvgProblems(readFileSync(join(dir, 'roc.svg'), 'utf8'), [roc])).toEqual([]);
      const t = await run(['roc', join(ties, 'input/scores.npy'), join(ties, 'input/labels.npy'), '--method', 'ijbc-IJBC']);
      expect(t.stdout).toContain(`| ${ref.table_row.join(' | ').replace('73.30', '73.30 ')} |`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('errors name the problem, with a JSON object under --json', async () => {
    const r = await run(['verification', '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).error.code).toBe('E_ARGUMENT');
    const m = await run(['ijb', '--root', '/nonexistent/IJBC', '--model', 'x.onnx']);
    expect(m.code).toBe(1);
    expect(m.stderr).toMatch(/error \[E_MODEL_LOAD\]|x\.onnx/);
    const dir = mkdtempSync(join(tmpdir(), 'pfc-cli-bad-'));
    try {
      writeNpy(join(dir, 's.npy'), Float64Array.from([0.1, 0.2]));
      writeNpy(join(dir, 'l.npy'), Int32Array.from([1]));
      const bad = await run(['roc', join(dir, 's.npy'), join(dir, 'l.npy')]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/2 scores but .* 1 labels/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  (existsSync(model) && existsSync(smallLfw) ? it : it.skip)('verification --bin --model runs the ONNX model on a real .bin', async () => {
    const r = await run(['verification', '--bin', smallLfw, '--model', model, '--norm-mean', '127', '--norm-std', '128', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.results[0].pairs).toBe(10);
    expect(j.results[0].flip).toBe(true);
    expect(j.results[0].xnorm).toBeGreaterThan(0);
    // 10 genuine LFW pairs in 10 folds of one: a held-out pair fails only when it is farther apart than all nine
    // others (the threshold is fit on genuine pairs alone), so a working model gets 0.8 or more, a broken one ~0
    expect(j.results[0].accuracy).toBeGreaterThanOrEqual(0.8);
    expect(j.results[0].bestThreshold).toBeLessThan(2);
  });

  (existsSync(model) && existsSync(faces) ? it : it.skip)('ijb --model runs the whole IJB pipeline on real photos with detected landmarks', async () => {
    const meta = JSON.parse(readFileSync(faces, 'utf8')) as { images: { file: string; identity: string; score: number; landmarks_5pt: number[][] }[] };
    const ids = [...new Set(meta.images.map((m) => m.identity))];
    const root = mkdtempSync(join(tmpdir(), 'pfc-cli-ijb-'));
    try {
      // template = (identity, even/odd photo); media = photo
      const images = meta.images.map((m, i) => ({
        name: `${i + 1}${m.file.slice(m.file.lastIndexOf('.'))}`,
        data: readFileSync(join(shared, 'realdata', m.file)),
        template: 2 * ids.indexOf(m.identity) + (i % 2) + 1,
        media: i + 1,
        landmarks: m.landmarks_5pt,
        score: m.score,
      }));
      const templates = [...new Set(images.map((x) => x.template))].sort((a, b) => a - b);
      const pairs: [number, number, 0 | 1][] = [];
      for (let a = 0; a < templates.length; a++)
        for (let b = a + 1; b < templates.length; b++) pairs.push([templates[a]!, templates[b]!, Math.floor((templates[a]! - 1) / 2) === Math.floor((templates[b]! - 1) / 2) ? 1 : 0]);
      writeIjbProtocol(root, 'IJBC', { images, pairs });
      const r = await run(['ijb', '--root', root, '--target', 'IJBC', '--model', model, '--norm-mean', '127', '--norm-std', '128', '--result-dir', join(root, 'out'), '--job', 'mbf', '--json']);
      expect(r.code).toBe(0);
      const j = JSON.parse(r.stdout);
      process.stderr.write(`realdata IJB-format run: ${j.templates} templates, ${j.pairs} pairs, AUC ${j.auc}, TAR ${j.tar.join(' ')}\n`);
      expect(j.mode).toBe('F1 N1 D1');
      expect(j.auc).toBeGreaterThan(0.95);
      expect(j.files).toHaveLength(4);
      expect(existsSync(join(root, 'out/mbf/ijbc.npy'))).toBe(true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('verification --model x.safetensors loads @pfc/backbone on demand and runs the tfjs model', async () => {
    // @pfc/backbone is not a dependency of @pfc/eval; inside the monorepo the test runner resolves it to its sources
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const backbone = require('@pfc/backbone') as {
      createBackbone(cfg: object, o?: object): { dispose(): void };
      saveSafetensors(m: object, p: string): void;
    };
    const dir = mkdtempSync(join(tmpdir(), 'pfc-cli-st-'));
    try {
      const model = backbone.createBackbone({ name: 'iresnet', layers: [1, 1, 1, 1], widths: [4, 4, 4, 4], embeddingSize: 16, inputSize: 112 }, { seed: 1 });
      backbone.saveSafetensors(model, join(dir, 'tiny.safetensors'));
      model.dispose();
      const jpegs: Uint8Array[] = [];
      for (let i = 0; i < 4; i++) {
        const px = Uint8Array.from({ length: 112 * 112 * 3 }, (_, k) => (k * (i + 3) + i * 50) % 256);
        jpegs.push(await sharp(px, { raw: { width: 112, height: 112, channels: 3 } }).jpeg().toBuffer());
      }
      writeVerificationBin(join(dir, 'tiny.bin'), jpegs, [true, false]);
      const r = await run(['verification', '--bin', join(dir, 'tiny.bin'), '--model', join(dir, 'tiny.safetensors'), '--backend', 'cpu', '--folds', '2', '--json']);
      expect(r.stderr).not.toMatch(/error/);
      expect(r.code).toBe(0);
      const j = JSON.parse(r.stdout);
      expect(j.results[0].dim).toBe(16);
      expect(j.results[0].xnorm).toBeGreaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('pfc-eval CLI with a tiny generated model', () => {
  let dir: string;
  let model: string;
  beforeAll(() => {
    // @pfc/backbone is not a dependency of @pfc/eval; inside the monorepo the test runner resolves it to its sources
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const backbone = require('@pfc/backbone') as {
      createBackbone(cfg: object, o?: object): { dispose(): void };
      saveSafetensors(m: object, p: string): void;
    };
    dir = mkdtempSync(join(tmpdir(), 'pfc-cli-tiny-'));
    model = join(dir, 'tiny.safetensors');
    const m = backbone.createBackbone({ name: 'iresnet', layers: [1, 1, 1, 1], widths: [4, 4, 4, 4], embeddingSize: 16, inputSize: 112 }, { seed: 1 });
    backbone.saveSafetensors(m, model);
    m.dispose();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('ijb --skip-missing --json names and counts the skipped images; without the flag it fails naming the file', async () => {
    const root = join(dir, 'ijb');
    const proto = await makeIjbProtocol(root, new Rng(3), { identities: 3 });
    rmSync(join(root, 'loose_crop', '7.png'));
    rmSync(join(root, 'loose_crop', '3.png'));
    const args = ['ijb', '--root', root, '--target', 'IJBC', '--model', model, '--backend', 'cpu', '--json'];
    const failed = await run(args);
    expect(failed.code).toBe(1);
    const missing = join(root, 'loose_crop', '3.png');
    expect(JSON.parse(failed.stdout).error).toEqual({ code: 'E_IMAGE_MISSING', message: expect.stringContaining(`'${missing}'`) });
    expect(failed.stderr).toContain(`error [E_IMAGE_MISSING]: IJB image '${missing}'`);
    expect(failed.stderr).toContain('--skip-missing');
    const r = await run([...args, '--skip-missing']);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.skipped).toBe(2);
    expect(j.skippedImages).toEqual(['3.png', '7.png']); // in protocol file order
    expect(j.images).toBe(proto.images.length);
    expect(j.templates).toBe(6);
    expect(j.pairs).toBe(proto.pairs.length);
    expect(j.tar).toHaveLength(6);
  });

  it('verification --bin refuses a malicious .bin with E_PICKLE_UNSAFE naming the file, and runs nothing', async () => {
    const evil = join(dir, 'evil');
    const sentinel = join(evil, 'pwned');
    mkdirSync(evil);
    for (const p of maliciousPickles(sentinel)) {
      const file = join(evil, `${p.name}.bin`);
      writeFileSync(file, p.bytes);
      const r = await run(['verification', '--bin', file, '--model', model, '--backend', 'cpu', '--json']);
      expect(r.code).toBe(1);
      const e = JSON.parse(r.stdout).error;
      expect(e.code).toBe('E_PICKLE_UNSAFE');
      expect(e.message.startsWith(`${file}: `)).toBe(true);
      expect(e.message).toContain('os.system');
      expect(r.stderr).toContain(`error [E_PICKLE_UNSAFE]: ${file}: `);
    }
    expect(existsSync(sentinel)).toBe(false);
  });
});
