import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, totalmem } from 'node:os';

/** One measured row: free-form columns, numbers rounded for the table but kept exact in JSON. */
export type Row = Record<string, string | number | boolean | null>;

export interface Report {
  /** Benchmark name (file name in `results/`). */
  name: string;
  /** What was measured, one paragraph. */
  description: string;
  /** The rows, each a configuration; a baseline measured in the same run sits beside the subject in each row. */
  rows: Row[];
  /** Extra facts (backend, threads, targets, conclusions). */
  notes?: string[];
}

/** The machine the numbers come from. */
export function machine(): Row {
  const c = cpus();
  return {
    cpu: c[0]?.model ?? 'unknown',
    cores: c.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
  };
}

function cell(v: Row[string]): string {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(3);
  }
  return v === null ? '–' : String(v);
}

/** Markdown table of rows (columns in first-seen order). */
export function markdownTable(rows: Row[]): string {
  const cols: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const lines = [`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`];
  for (const r of rows) lines.push(`| ${cols.map((c) => cell(r[c] ?? null)).join(' | ')} |`);
  return lines.join('\n');
}

/**
 * Writes `results/<name>.json` and `results/<name>.md` and prints the table.
 * @returns the paths written
 */
export function writeReport(report: Report, dir = join(__dirname, '..', 'results')): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const m = machine();
  const json = join(dir, `${report.name}.json`);
  const md = join(dir, `${report.name}.md`);
  const when = new Date().toISOString();
  writeFileSync(json, `${JSON.stringify({ ...report, machine: m, date: when }, null, 2)}\n`);
  const text = [
    `# ${report.name}`,
    '',
    report.description,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}; ${when}.`,
    '',
    markdownTable(report.rows),
    '',
    ...(report.notes ?? []).map((n) => `- ${n}`),
    '',
  ].join('\n');
  writeFileSync(md, text);
  process.stdout.write(`${text}\n`);
  return { json, md };
}

/** Median wall time in milliseconds of `fn` over `runs` runs after `warmup` runs. */
export async function timeMs(fn: () => unknown | Promise<unknown>, runs = 5, warmup = 1): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const s = process.hrtime.bigint();
    await fn();
    t.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)]!;
}
