import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** Where a worker script is and how to start it: `new Worker(ws.entry, { eval: ws.eval, execArgv: ws.execArgv })`. */
export interface WorkerScript {
  /** The worker module's file. */
  filename: string;
  /** What to pass to `new Worker`: the file itself, or a bootstrap to evaluate when `eval` is true. */
  entry: string;
  eval: boolean;
  execArgv: string[];
}

/**
 * Locates the worker script `<dir>/<base>` that sits beside the calling module, whether the caller runs from
 * TypeScript sources (tests, `tsx`: the worker is `<base>.ts`, loaded through tsx with the `@pfc/source`
 * export condition so it too reads sources) or from the built package (`<base>.js` or `<base>.mjs`, matching the caller).
 * @param callerFilename the caller's `__filename`
 * @param dir the caller's `__dirname`
 * @param base the worker's file name without extension
 */
export function workerScript(callerFilename: string, dir: string, base: string): WorkerScript {
  if (callerFilename.endsWith('.ts')) {
    // Node 20 does not apply ESM loader hooks to a worker's entry module, so the worker is bootstrapped through
    // tsx's CommonJS hook, which compiles any .ts on require.
    const tsxCjs = createRequire(callerFilename).resolve('tsx/cjs');
    const filename = join(dir, `${base}.ts`);
    return {
      filename,
      entry: `require(${JSON.stringify(tsxCjs)}); require(${JSON.stringify(filename)});`,
      eval: true,
      execArgv: ['--conditions=@pfc/source'],
    };
  }
  const ext = callerFilename.endsWith('.mjs') ? '.mjs' : '.js';
  const filename = join(dir, `${base}${ext}`);
  const found = existsSync(filename) ? filename : join(dir, `${base}.js`);
  return { filename: found, entry: found, eval: false, execArgv: [] };
}
