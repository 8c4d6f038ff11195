#!/usr/bin/env node
/**
 * Builds the native bindings (build/Release/pfc_mpi.node when MPI is installed, pfc_nccl.node always: it loads
 * NCCL and CUDA at run time). Run at install: a failed build only warns, because the addons are optional and the
 * local and threads backends need none. `--required` (CI, `npm run build:native`) makes a failure an error.
 */
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const required = process.argv.includes('--required');
const pkg = join(__dirname, '..');
const hasMpi = spawnSync('mpicc', ['--showme:version'], { stdio: 'ignore' }).status === 0;

function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return [process.execPath, process.env.npm_config_node_gyp];
  // npm bundles node-gyp; outside an npm script use that copy.
  const npmDir = join(process.execPath, '..', '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(npmDir)) return [process.execPath, npmDir];
  return ['node-gyp'];
}

const [cmd, ...pre] = nodeGyp();
const args = [...pre, 'rebuild'];
// Without headers node-gyp downloads them, which offline machines cannot. npm passes its configured nodedir to
// scripts (npm_config_nodedir); otherwise use the headers installed beside this Node, when there are any.
const localHeaders = join(process.execPath, '..', '..');
if (!process.env.npm_config_nodedir && existsSync(join(localHeaders, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${localHeaders}`);
const r = spawnSync(cmd, args, { cwd: pkg, stdio: required ? 'inherit' : ['ignore', 'ignore', 'inherit'], env: process.env });
if (r.status !== 0) {
  const msg = `@pfc/collective: building the native MPI/NCCL bindings failed (node-gyp exit ${r.status ?? r.signal}); the local and threads backends work without them.`;
  if (required) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
} else if (!hasMpi) {
  console.warn('@pfc/collective: MPI not found (no mpicc); built without the MPI backend. Install libopenmpi-dev openmpi-bin and run `npm run build:native -w @pfc/collective`.');
}
