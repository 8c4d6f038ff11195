/**
 * The real NCCL binding (native/nccl.cc) over fake libcudart / libnccl.so.2 built from
 * `__fixtures__/fake-cuda-nccl.c`: checks on a CPU machine what only the C++ side does (the dlopen of both
 * libraries, dtype → ncclDataType_t, and the host↔device staging order of every collective), one rank.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addonPath } from './native';

const cc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;
const ready = cc && existsSync(addonPath('pfc_nccl'));

let dir: string;
beforeAll(() => {
  if (!ready) return;
  dir = mkdtempSync(join(tmpdir(), 'pfc-fake-nccl-'));
  const lib = join(dir, 'libcudart.so');
  const build = spawnSync('cc', ['-shared', '-fPIC', '-O1', '-o', lib, join(__dirname, '__fixtures__', 'fake-cuda-nccl.c')], { encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`building the fake libraries failed:\n${build.stderr}`);
  copyFileSync(lib, join(dir, 'libnccl.so.2'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function runRank(name: string, extraEnv: Record<string, string> = {}): Promise<{ out: unknown; log: string[] }> {
  const log = join(dir, `${name}.log`);
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, LD_LIBRARY_PATH: dir, FAKE_NCCL_LOG: log, PFC_NCCL_ID_FILE: join(dir, `${name}.ncclid`), PFC_RANK: '0', PFC_WORLD_SIZE: '1', ...extraEnv };
  const child = spawn(process.execPath, ['--conditions=@pfc/source', '-r', 'tsx/cjs', join(__dirname, '__fixtures__', 'nccl-native-main.ts')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  expect(code).toBe(0);
  return { out: JSON.parse(out) as unknown, log: existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [] };
}

// Each collective: H2D copy of the send part, the NCCL call on the stream, synchronize, D2H copy of the result.
const staged = (bytesIn: number, call: string, bytesOut = bytesIn): string[] => ['cudaSetDevice 0', `cudaMemcpy H2D ${bytesIn}`, call, 'cudaStreamSynchronize', `cudaMemcpy D2H ${bytesOut}`];

describe('NCCL binding over fake CUDA/NCCL libraries', () => {
  (ready ? it : it.skip)('loads both libraries, maps dtypes to ncclDataType_t and stages every collective H2D → NCCL → sync → D2H', async () => {
    const [ok, failing] = await Promise.all([runRank('ok'), runRank('fail', { FAKE_NCCL_FAIL: 'ncclAllReduce' })]);
    // One rank: reductions are identities; the values survive the round trip through "device" memory.
    expect(ok.out).toEqual({ f32: [1.5, -2], f64: [3, 4, 5], i32: [7, 8], f16: [0x3c00, 0x4000, 0xc000], rs: [0.25, 0.5] });
    const withMalloc = (lines: string[], malloc: string[]): string[] => [lines[0]!, ...malloc, ...lines.slice(1)];
    expect(ok.log).toEqual([
      'cudaSetDevice 0',
      // rank 0's id (ncclGetUniqueId fills 7s) reached ncclCommInitRank through the file, passed by value
      'ncclCommInitRank nranks=1 rank=0 id[0]=7 id[127]=7',
      // float32 → ncclFloat32 (7), sum → ncclSum (0), in place; the device buffer is [send | 256-byte gap | recv]
      ...withMalloc(staged(8, 'ncclAllReduce count=2 type=7 op=0 inplace=1'), ['cudaMalloc 264']),
      // float64 → ncclFloat64 (8), max → ncclMax (2); a larger message regrows the buffer
      ...withMalloc(staged(24, 'ncclAllReduce count=3 type=8 op=2 inplace=1'), ['cudaFree', 'cudaMalloc 280']),
      // int32 → ncclInt32 (2)
      ...staged(8, 'ncclBroadcast count=2 type=2 root=0 inplace=1'),
      // allGather: the int32 lengths first, then the fp16 payload (→ ncclFloat16, 6)
      ...staged(4, 'ncclAllGather count=1 type=2'),
      ...staged(6, 'ncclAllGather count=3 type=6'),
      ...staged(8, 'ncclReduceScatter count=2 type=7 op=2'),
      'cudaSetDevice 0',
      'cudaFree',
      'ncclCommDestroy',
    ]);
    // An NCCL error code comes back as E_NCCL carrying ncclGetErrorString's text; the D2H copy is skipped.
    expect(failing.out).toEqual({
      code: 'E_NCCL',
      message: 'nccl allReduce: rank 0: g_api.ncclAllReduce(dsend, dsend, a_.length, t, op_, c->comm, c->stream): unhandled cuda error',
    });
    expect(failing.log.slice(2)).toEqual(['cudaSetDevice 0', 'cudaMalloc 264', 'cudaMemcpy H2D 8', 'ncclAllReduce count=2 type=7 op=0 inplace=1']);
  });
});
