/**
 * Shared jest configuration. Tests read `src`, never `dist`: `@pfc/<pkg>` maps to `packages/<pkg>/src`.
 * `PFC_SLOW=1` selects only `*.slow.test.ts`; the default run excludes them.
 */
const path = require('node:path');

const slow = process.env.PFC_SLOW === '1';

/** @param {string} rootDir the package directory */
function jestConfig(rootDir) {
  return {
    rootDir,
    testEnvironment: 'node',
    transform: {
      '^.+\\.(t|j)sx?$': [
        require.resolve('@swc/jest'),
        { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } },
      ],
    },
    moduleNameMapper: {
      '^@pfc/([a-z-]+)$': path.join(__dirname, 'packages/$1/src/index.ts'),
    },
    testMatch: slow ? ['<rootDir>/src/**/*.slow.test.ts', '<rootDir>/test/**/*.slow.test.ts'] : ['<rootDir>/src/**/*.test.ts', '<rootDir>/test/**/*.test.ts'],
    testPathIgnorePatterns: slow ? ['/node_modules/', '/dist/'] : ['/node_modules/', '/dist/', '\\.slow\\.test\\.ts$'],
    testTimeout: 120000,
  };
}

module.exports = { jestConfig };
