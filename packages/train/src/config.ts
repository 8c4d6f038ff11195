import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, extname, join, resolve } from 'node:path';
import { PfcError, formatValue } from '@pfc/core';

/**
 * Training configuration with the reference's field names (`recognition/arcface_torch/configs/base.py`), so a
 * reference config ports key by key. Fields after `dali_aug` are @pfc extensions.
 */
export interface TrainConfig {
  /** Margin `(m1, m2, m3)`: ArcFace `(1.0, 0.5, 0.0)`, CosFace `(1.0, 0.0, 0.4)`. */
  margin_list: [number, number, number];
  /** Backbone name (`r18`, `r34`, `r50`, `r100`, `r200`, `mbf`, ... or `small` for the configurable iResNet). */
  network: string;
  /** Continue from `<output>/checkpoints/latest`. */
  resume: boolean;
  /** Keep every rank's full state in each checkpoint (always true here: every checkpoint is a full state). */
  save_all_states: boolean;
  /** Output directory; `null` becomes `work_dirs/<config name>`. */
  output: string | null;
  /** Embedding dimension d. */
  embedding_size: number;
  /** Partial FC sample rate ρ in [0, 1] (1 = model parallel, no sampling). */
  sample_rate: number;
  /** Inter-class filtering threshold τ (0 = off). */
  interclass_filtering_threshold: number;
  /** Mixed precision (float16 gradient all-reduce). */
  fp16: boolean;
  /** Per-rank batch size B. */
  batch_size: number;
  /** `sgd` (momentum 0.9) or `adamw`. */
  optimizer: 'sgd' | 'adamw';
  /** Base learning rate. */
  lr: number;
  /** SGD momentum. The reference hard-codes 0.9 and ignores this field; every reference config writes 0.9 anyway. */
  momentum: number;
  /** Weight decay, applied to every parameter (backbone and class centers). */
  weight_decay: number;
  /** Verification period in steps. */
  verbose: number;
  /** Logging period in steps. */
  frequent: number;
  /** DALI loader (not available in Node; accepted and ignored). */
  dali: boolean;
  /** DALI augmentation (accepted and ignored). */
  dali_aug: boolean;
  /** Micro-batches per optimizer step; gradients are summed, as in the reference. */
  gradient_acc: number;
  /** Seed of every random stream. */
  seed: number;
  /** Data loader workers (accepted; the loader sizes its own pool). */
  num_workers: number;
  /** Dataset directory holding `train.rec`/`train.idx` and the verification `.bin` files. */
  rec: string;
  /** Number of identities C. */
  num_classes: number;
  /** Number of training images (for the step counts of the schedule). */
  num_image: number;
  /** Epochs. */
  num_epoch: number;
  /** Warmup epochs (0 = none). */
  warmup_epoch: number;
  /** Names of the verification sets `<rec>/<name>.bin`. */
  val_targets: string[];
  /** Weights & Biases (not available; must be false). */
  using_wandb: boolean;
  // ---- @pfc extensions ----
  /** Exponent of the polynomial decay (the reference's `PolynomialLRWarmup` default, used by `train_v2.py`, is 1). */
  lr_power: number;
  /** Also checkpoint every this many steps (0 = only at the end of each epoch). */
  checkpoint_steps: number;
  /** Checkpoints kept on disk (older ones are deleted once a newer one is complete). */
  keep_checkpoints: number;
  /** Square input size in pixels (112 for the reference models). */
  image_size: number;
  /** Options of the configurable small iResNet (`network: 'small'`). */
  network_options: { layers?: number[]; widths?: number[] } | null;
  /** Backbone gradient clipping: max global L2 norm (the reference clips at 5). */
  clip_grad_norm: number;
  /** Random horizontal flip of training images (the reference's `RandomHorizontalFlip`). */
  random_flip: boolean;
  /**
   * Class-center update: `sparse` (the original Partial FC memory bank: only sampled rows and their momentum move,
   * O(sampled) per step) or `dense` (the reference V2: weight decay and momentum move every row every step).
   */
  pfc_update: 'sparse' | 'dense';
}

/** The reference's `configs/base.py` defaults plus ours for the extension fields. */
export const DEFAULT_CONFIG: Readonly<TrainConfig> = Object.freeze({
  margin_list: [1.0, 0.5, 0.0] as [number, number, number],
  network: 'r50',
  resume: false,
  save_all_states: false,
  output: 'ms1mv3_arcface_r50',
  embedding_size: 512,
  sample_rate: 1.0,
  interclass_filtering_threshold: 0,
  fp16: false,
  batch_size: 128,
  optimizer: 'sgd' as const,
  lr: 0.1,
  momentum: 0.9,
  weight_decay: 5e-4,
  verbose: 2000,
  frequent: 10,
  dali: false,
  dali_aug: false,
  gradient_acc: 1,
  seed: 2048,
  num_workers: 2,
  rec: '',
  num_classes: 0,
  num_image: 0,
  num_epoch: 20,
  warmup_epoch: 0,
  val_targets: [] as string[],
  using_wandb: false,
  lr_power: 1,
  checkpoint_steps: 0,
  keep_checkpoints: 2,
  image_size: 112,
  network_options: null,
  clip_grad_norm: 5,
  random_flip: true,
  pfc_update: 'sparse' as const,
});

/** Keys of the reference's base config that are accepted but have no effect here (W&B, DALI internals). */
const IGNORED_KEYS = new Set(['wandb_key', 'suffix_run_name', 'wandb_entity', 'wandb_project', 'wandb_log_all', 'save_artifacts', 'wandb_resume']);

type Kind = 'number' | 'int' | 'posint' | 'bool' | 'string' | 'string?' | 'margins' | 'strings' | 'enum' | 'object?' | 'nonnegint';
const KINDS: Record<keyof TrainConfig, Kind> = {
  margin_list: 'margins',
  network: 'string',
  resume: 'bool',
  save_all_states: 'bool',
  output: 'string?',
  embedding_size: 'posint',
  sample_rate: 'number',
  interclass_filtering_threshold: 'number',
  fp16: 'bool',
  batch_size: 'posint',
  optimizer: 'enum',
  lr: 'number',
  momentum: 'number',
  weight_decay: 'number',
  verbose: 'posint',
  frequent: 'posint',
  dali: 'bool',
  dali_aug: 'bool',
  gradient_acc: 'posint',
  seed: 'int',
  num_workers: 'nonnegint',
  rec: 'string',
  num_classes: 'posint',
  num_image: 'posint',
  num_epoch: 'posint',
  warmup_epoch: 'nonnegint',
  val_targets: 'strings',
  using_wandb: 'bool',
  lr_power: 'number',
  checkpoint_steps: 'nonnegint',
  keep_checkpoints: 'posint',
  image_size: 'posint',
  network_options: 'object?',
  clip_grad_norm: 'number',
  random_flip: 'bool',
  pfc_update: 'enum',
};

const EXPECTED: Record<Kind, string> = {
  number: 'a finite number',
  int: 'an integer',
  posint: 'a positive integer',
  nonnegint: 'a non-negative integer',
  bool: 'a boolean',
  string: 'a string',
  'string?': 'a string or null',
  margins: 'three finite numbers [m1, m2, m3]',
  strings: 'an array of strings',
  enum: 'one of the listed values',
  'object?': 'an object or null',
};

function configError(field: string, expected: string, actual: unknown, origin: string): PfcError {
  return new PfcError('E_CONFIG', `${origin}: field '${field}' must be ${expected}, got ${formatValue(actual)}`, {
    details: { field, expected, actual },
  });
}

const ENUMS: Partial<Record<keyof TrainConfig, readonly string[]>> = {
  optimizer: ['sgd', 'adamw'],
  pfc_update: ['sparse', 'dense'],
};

function checkKind(kind: Kind, v: unknown, field: keyof TrainConfig): boolean {
  switch (kind) {
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'int':
      return Number.isInteger(v);
    case 'posint':
      return Number.isInteger(v) && (v as number) > 0;
    case 'nonnegint':
      return Number.isInteger(v) && (v as number) >= 0;
    case 'bool':
      return typeof v === 'boolean';
    case 'string':
      return typeof v === 'string';
    case 'string?':
      return v === null || typeof v === 'string';
    case 'margins':
      return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
    case 'strings':
      return Array.isArray(v) && v.every((x) => typeof x === 'string');
    case 'enum':
      return typeof v === 'string' && (ENUMS[field] ?? []).includes(v);
    case 'object?':
      return v === null || (typeof v === 'object' && !Array.isArray(v));
  }
}

/**
 * Overlays `partial` on the reference defaults and validates every field, as the reference's `get_config` overlays a
 * job config on `base.py`. Unknown keys, wrong types and out-of-range values throw `E_CONFIG` naming the field, the
 * expected and the actual value.
 * @param partial job config (reference field names)
 * @param origin where the config came from, for messages (a file path)
 * @returns the complete, validated config (a new object)
 */
export function resolveConfig(partial: Record<string, unknown>, origin = 'config'): TrainConfig {
  if (partial === null || typeof partial !== 'object' || Array.isArray(partial)) {
    throw new PfcError('E_CONFIG', `${origin}: a config must be an object of fields, got ${formatValue(partial)}`);
  }
  const out: Record<string, unknown> = { ...DEFAULT_CONFIG, margin_list: [...DEFAULT_CONFIG.margin_list], val_targets: [...DEFAULT_CONFIG.val_targets] };
  for (const [k, v] of Object.entries(partial)) {
    if (IGNORED_KEYS.has(k)) continue;
    if (!(k in KINDS)) {
      const known = Object.keys(KINDS);
      const near = known.find((n) => n.replace(/_/g, '') === k.replace(/[_-]/g, '').toLowerCase());
      throw new PfcError('E_CONFIG', `${origin}: unknown field '${k}'${near ? ` (did you mean '${near}'?)` : ''}; known fields: ${known.join(', ')}`, {
        details: { field: k },
      });
    }
    // Python tuples arrive as arrays; JSON has no tuples.
    out[k] = Array.isArray(v) ? [...v] : v;
  }
  for (const [k, kind] of Object.entries(KINDS) as [keyof TrainConfig, Kind][]) {
    const expected = kind === 'enum' ? `one of ${ENUMS[k]!.map((e) => `'${e}'`).join(', ')}` : EXPECTED[kind];
    if (!checkKind(kind, out[k], k)) throw configError(k, expected, out[k], origin);
  }
  const c = out as unknown as TrainConfig;
  const range = (field: keyof TrainConfig, ok: boolean, expected: string): void => {
    if (!ok) throw configError(field, expected, c[field], origin);
  };
  range('sample_rate', c.sample_rate >= 0 && c.sample_rate <= 1, 'in [0, 1]');
  range('lr', c.lr > 0, 'positive');
  range('momentum', c.momentum >= 0 && c.momentum < 1, 'in [0, 1)');
  range('weight_decay', c.weight_decay >= 0, 'non-negative');
  range('interclass_filtering_threshold', c.interclass_filtering_threshold >= 0 && c.interclass_filtering_threshold <= 1, 'in [0, 1]');
  range('lr_power', c.lr_power > 0, 'positive');
  range('clip_grad_norm', c.clip_grad_norm > 0, 'positive');
  range('warmup_epoch', c.warmup_epoch <= c.num_epoch, `at most num_epoch (${c.num_epoch})`);
  const [m1, m2, m3] = c.margin_list;
  range('margin_list', m1 === 1 && (m3 > 0 || m3 === 0) && m2 >= 0, 'ArcFace (1, m2, 0) or CosFace (1, 0, m3) with m1 = 1 (the reference rejects m1 != 1)');
  range('using_wandb', !c.using_wandb, 'false (Weights & Biases is not available in @pfc)');
  if (c.network_options) {
    const { layers, widths } = c.network_options;
    const okList = (a: unknown, n: number) => a === undefined || (Array.isArray(a) && a.length === n && a.every((x) => Number.isInteger(x) && x > 0));
    range('network_options', okList(layers, 4) && okList(widths, 4), '{ layers?: 4 positive integers, widths?: 4 positive integers }');
  }
  return c;
}

/**
 * Loads a config file: `.json`, or a `.ts`/`.js`/`.cjs` module whose default export (or `config` export) is the
 * job config. Relative `rec`/`output` stay relative to the working directory, as in the reference.
 * `output: null` becomes `work_dirs/<file name without extension>` (the reference's rule).
 * @param path config file
 * @param overrides fields that win over the file's (from the command line)
 */
export function loadConfig(path: string, overrides: Record<string, unknown> = {}): TrainConfig {
  const file = resolve(path);
  if (!existsSync(file)) throw new PfcError('E_CONFIG', `loadConfig: config file ${file} does not exist`, { details: { file } });
  const ext = extname(file);
  let raw: unknown;
  try {
    if (ext === '.json') {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } else if (ext === '.ts' || ext === '.js' || ext === '.cjs' || ext === '.mts' || ext === '.mjs') {
      const req = createRequire(__filename);
      if (ext.endsWith('ts') && !require.extensions['.ts']) req('tsx/cjs');
      const mod = req(file) as { default?: unknown; config?: unknown };
      raw = mod.default ?? mod.config ?? mod;
    } else {
      throw new PfcError('E_CONFIG', `loadConfig: ${file} must end in .json, .ts, .js or .cjs, got '${ext}'`);
    }
  } catch (err) {
    if (err instanceof PfcError) throw err;
    throw new PfcError('E_CONFIG', `loadConfig: cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const cfg = resolveConfig({ ...(raw as Record<string, unknown>), ...overrides }, file);
  if (cfg.output === null) cfg.output = join('work_dirs', basename(file, ext));
  return cfg;
}

/**
 * Parses `field=value` config overrides (the CLIs' `--set`): each value as JSON when it parses (`64`, `0.1`, `true`,
 * `[1,0.5,0]`), else as the plain string. Field names and values are checked later by {@link resolveConfig}.
 * @param pairs `field=value` strings
 * @param who the program named in the error (`E_ARGUMENT` for an entry without `=`)
 */
export function parseOverrides(pairs: readonly string[], who: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of pairs) {
    const i = kv.indexOf('=');
    if (i < 1) throw new PfcError('E_ARGUMENT', `${who}: --set expects field=value, got '${kv}'`);
    const raw = kv.slice(i + 1);
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch {
      v = raw;
    }
    out[kv.slice(0, i)] = v;
  }
  return out;
}

/** The resolved config as the reference logs it at start-up: one `": key<spaces to column 25>value"` line per field. */
export function formatConfig(cfg: TrainConfig): string[] {
  return Object.entries(cfg).map(([k, v]) => `: ${k}${' '.repeat(Math.max(1, 25 - k.length))}${Array.isArray(v) ? `(${v.join(', ')})` : formatValue(v)}`);
}
