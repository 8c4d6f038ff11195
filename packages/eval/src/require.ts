import { createRequire } from 'node:module';

/**
 * Loads an optional CommonJS dependency at run time, in both builds: through `createRequire` (the ESM build shims
 * `__filename`), then through the ambient `require` where one exists (CommonJS callers, test runners with their
 * own module maps).
 */
export function optionalRequire<T>(name: string): T {
  try {
    return createRequire(__filename)(name) as T;
  } catch (first) {
    const ambient = typeof require === 'function' ? require : undefined;
    if (ambient === undefined) throw first;
    try {
      return ambient(name) as T;
    } catch {
      throw first;
    }
  }
}
