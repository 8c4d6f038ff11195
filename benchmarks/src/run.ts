/**
 * Runs one benchmark: `npm run bench -- <name> [args...]` loads `src/<name>.ts`, whose default export is
 * `(args: string[]) => Promise<void>` and writes its report with `writeReport`.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const available = readdirSync(__dirname)
    .filter((f) => f.endsWith('.ts') && !['run.ts', 'report.ts', 'index.ts'].includes(f))
    .map((f) => f.slice(0, -3));
  if (!name || name === '--help' || !available.includes(name)) {
    process.stdout.write(`usage: npm run bench -- <name> [args]\navailable: ${available.join(', ')}\n`);
    process.exitCode = name && name !== '--help' ? 1 : 0;
    return;
  }
  const mod = (await import(join(__dirname, `${name}.ts`))) as { default: (args: string[]) => Promise<void> };
  await mod.default(args);
}

void main();
