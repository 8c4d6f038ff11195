import { defineConfig, type Options } from 'tsup';

/**
 * The one tsup configuration every published package uses: dual ESM/CJS output with types per format,
 * `__dirname`/`__filename` shims for the ESM build (workers are located relative to the module),
 * and no bundling of dependencies.
 * @param entry entry points relative to the package (the first is the public index)
 * @param extra overrides for a package that needs them
 */
export function pfcTsup(entry: Record<string, string>, extra: Options = {}) {
  return defineConfig({
    entry,
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    shims: true,
    target: 'node20',
    platform: 'node',
    tsconfig: 'tsconfig.build.json',
    splitting: false,
    ...extra,
  });
}
