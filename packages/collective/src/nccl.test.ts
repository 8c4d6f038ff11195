import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PfcError } from '@pfc/core';
import type { Communicator } from './communicator';
import { runConformance, type ConformanceReport } from './conformance';
import { createCommunicator } from './factory';
import { runThreads } from './launch';
import { createLocalGroup, runLocal } from './local';
import { addonPath, loadAddon } from './native';
import { NCCL_BINDING_HINT, NCCL_INSTALL_HINT, NcclCommunicator, createNcclCommunicator, ncclAvailability, type NcclOptions } from './nccl';
import { fakeNcclAddon, hex, type FakeNcclCall, type FakeNcclOptions } from './__fixtures__/fake-nccl';
import { mpiReady, runMpiMain } from './__fixtures__/mpirun';

const built = existsSync(addonPath('pfc_nccl'));
const availability = ncclAvailability();
const gpu = process.env.PFC_GPU === '1';

describe('NcclCommunicator', () => {
  (built && !availability.ok ? it : it.skip)('without libnccl / CUDA, reports which library is missing and gives E_BACKEND_UNAVAILABLE', async () => {
    expect(availability.error).toMatch(/libnccl\.so\.2|libcudart/);
    const dir = mkdtempSync(join(tmpdir(), 'pfc-nccl-'));
    try {
      const env = { PFC_NCCL_ID_FILE: join(dir, 'id'), PFC_RANK: '0', PFC_WORLD_SIZE: '1' };
      const err = await createCommunicator({ backend: 'nccl', env }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'E_BACKEND_UNAVAILABLE', message: expect.stringMatching(/nccl backend unavailable: .*(libnccl\.so\.2|libcudart).*NVIDIA GPU/s) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // GPU machines: PFC_GPU=1 npx jest src/nccl.test.ts. One rank per GPU (NCCL refuses two ranks on one device).
  (gpu ? it : it.skip)('passes the conformance suite on the visible GPUs (file bootstrap, one process per GPU)', async () => {
    expect(availability).toMatchObject({ ok: true });
    const n = Math.min(availability.devices ?? 1, 3);
    const dir = mkdtempSync(join(tmpdir(), 'pfc-nccl-'));
    const script = join(__dirname, '__fixtures__', 'nccl-main.ts');
    try {
      const runs = Array.from({ length: n }, (_, r) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const child = spawn(process.execPath, ['--conditions=@pfc/source', '-r', 'tsx/cjs', script], {
            env: { ...process.env, PFC_COLLECTIVE: 'nccl', PFC_NCCL_ID_FILE: join(dir, 'id'), PFC_RANK: String(r), PFC_WORLD_SIZE: String(n), LOCAL_RANK: String(r) },
            stdio: ['ignore', 'pipe', 'inherit'],
          });
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.on('close', (code) => resolve({ code, out }));
        }),
      );
      for (const { code, out } of await Promise.all(runs)) {
        expect(code).toBe(0);
        const report = JSON.parse(out) as { checks: { name: string; ok: boolean }[] };
        // NCCL decides fp16 rounding and NaN handling of max: those checks are reported, not required.
        const required = report.checks.filter((c) => !/float16|NaN/.test(c.name));
        expect(required.filter((c) => !c.ok)).toEqual([]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** `n` ranks over fake bindings, bootstrapped through a local group (as through MPI); data over another local group. */
async function fakeGroup(n: number, fake: (rank: number) => FakeNcclOptions = () => ({}), options: Partial<NcclOptions> = {}, linkTimeoutMs = 60_000) {
  const boot = createLocalGroup(n);
  const links = createLocalGroup(n, { timeoutMs: linkTimeoutMs });
  const addons = links.map((fabric, r) => fakeNcclAddon({ fabric, ...fake(r) }));
  const comms = await Promise.all(boot.map((b, r) => createNcclCommunicator(addons[r]!, { bootstrap: { communicator: b }, device: 0, ...options })));
  return { comms, addons, boot };
}

const collectiveCalls = (calls: FakeNcclCall[]) => calls.filter((c) => c.fn === 'collective');
const digests = (reports: ConformanceReport[]) => reports.map((r) => r.checks.map((c) => `${c.name} ${c.digest}`));
const caught = async (p: Promise<unknown>): Promise<PfcError> => {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(PfcError);
  return e as PfcError;
};

describe('NcclCommunicator over a fake binding (no GPU needed)', () => {
  it.each([2, 3])('bootstrap communicator, %i ranks: rank 0 makes the id, the bootstrap broadcasts it, every rank inits with it', async (n) => {
    const { comms, addons } = await fakeGroup(n, (r) => ({ seed: 10 * (r + 1) }));
    await Promise.all(comms.map((c) => c.close()));
    const inits = addons.map((a) => a.calls.find((c) => c.fn === 'initRank'));
    const id = hex(Uint8Array.from({ length: 128 }, (_, i) => (10 + i) & 255)); // rank 0's fake id (seed 10)
    expect(inits).toEqual(Array.from({ length: n }, (_, r) => ({ fn: 'initRank', id, nranks: n, rank: r, device: 0 })));
    expect(addons.map((a) => a.calls.filter((c) => c.fn === 'uniqueId').length)).toEqual([1, ...new Array(n - 1).fill(0)]);
    expect(comms.map((c) => [c.backend, c.rank, c.worldSize])).toEqual(Array.from({ length: n }, (_, r) => ['nccl', r, n]));
    // available → (uniqueId) → initRank → destroy: nothing else was asked of the binding.
    expect(addons[0]!.calls.map((c) => c.fn)).toEqual(['available', 'uniqueId', 'initRank', 'destroy']);
  });

  it('passes the device option to ncclCommInitRank and checks it against the visible GPUs', async () => {
    const boot = createLocalGroup(2);
    const addons = [0, 1].map(() => fakeNcclAddon({ devices: 2 }));
    await Promise.all(boot.map((b, r) => createNcclCommunicator(addons[r]!, { bootstrap: { communicator: b }, device: 1 - r })));
    expect(addons.map((a) => (a.calls.find((c) => c.fn === 'initRank') as { device: number }).device)).toEqual([1, 0]);
    const err = await caught(createNcclCommunicator(fakeNcclAddon({ devices: 2 }), { bootstrap: { communicator: createLocalGroup(1)[0]! }, device: 2 }));
    expect(err).toMatchObject({ code: 'E_ARGUMENT', message: "nccl: argument 'device' must be an integer in [0, 2) (visible CUDA devices), got 2" });
  });

  it.each([2, 3])('passes the conformance suite on %i ranks with the same results as local', async (n) => {
    const { comms } = await fakeGroup(n);
    const reports = await Promise.all(comms.map((c) => runConformance(c, { large: 300 })));
    await Promise.all(comms.map((c) => c.close()));
    for (const rep of reports) expect(rep.checks.filter((c) => !c.ok)).toEqual([]);
    const local = await runLocal(n, (c) => runConformance(c, { large: 300 }));
    expect(digests(reports)).toEqual(digests(local));
  });

  it('maps dtypes to the binding codes and sum/max to ncclSum/ncclMax; allGather and reduceScatter pad to the largest part', async () => {
    const { comms, addons } = await fakeGroup(3);
    const calls0 = () => collectiveCalls(addons[0]!.calls).splice(0);
    const lens = [3, 1, 0];
    const gathered = await Promise.all(comms.map((c, r) => c.allGather(Float64Array.from({ length: lens[r]! }, (_, i) => 10 * r + i))));
    expect(gathered.map((g) => [...g])).toEqual(new Array(3).fill([0, 1, 2, 10]));
    // Lengths first (int32, one each), then the payload padded to 3 per rank.
    expect(calls0()).toEqual([
      { fn: 'collective', kind: 'allGather', dtype: 2, op: 0, root: 0, a: 1, b: 3 },
      { fn: 'collective', kind: 'allGather', dtype: 1, op: 0, root: 0, a: 3, b: 9 },
    ]);
    addons[0]!.calls.length = 0;
    const counts = [2, 0, 3];
    const scattered = await Promise.all(comms.map((c, r) => c.reduceScatter(Float32Array.from({ length: 5 }, (_, i) => (r === 1 ? 100 : i)), 'max', counts)));
    expect(scattered.map((s) => [...s])).toEqual([[100, 100], [], [100, 100, 100]]);
    expect(collectiveCalls(addons[0]!.calls)).toEqual([{ fn: 'collective', kind: 'reduceScatter', dtype: 0, op: 2, root: 0, a: 9, b: 3 }]);
    addons[0]!.calls.length = 0;
    await Promise.all(comms.map((c) => c.allReduce(new Uint16Array([0x3c00]), 'sum'))); // fp16 1.0
    await Promise.all(comms.map((c) => c.allReduce(new Int32Array([1, 2]), 'max')));
    await Promise.all(comms.map((c, r) => c.broadcast(new Float32Array([r]), 2)));
    await Promise.all(comms.map((c) => c.barrier()));
    expect(collectiveCalls(addons[0]!.calls)).toEqual([
      { fn: 'collective', kind: 'allReduce', dtype: 3, op: 0, root: 0, a: 1, b: null },
      { fn: 'collective', kind: 'allReduce', dtype: 2, op: 2, root: 0, a: 2, b: null },
      { fn: 'collective', kind: 'broadcast', dtype: 0, op: 0, root: 2, a: 1, b: null },
      { fn: 'collective', kind: 'allReduce', dtype: 2, op: 0, root: 0, a: 1, b: null },
    ]);
    await Promise.all(comms.map((c) => c.close()));
  });

  it('rejects bad arguments with E_ARGUMENT before calling the binding', async () => {
    const { comms, addons } = await fakeGroup(1);
    const c = comms[0]!;
    expect(await caught(c.allReduce(new Int8Array(2) as never))).toMatchObject({ code: 'E_ARGUMENT', message: expect.stringContaining('[object Int8Array]') });
    expect(await caught(c.allReduce(new Float32Array(2), 'min' as never))).toMatchObject({ code: 'E_ARGUMENT', message: `allReduce: argument 'op' must be 'sum' or 'max', got "min"` });
    expect(await caught(c.reduceScatter(new Float32Array(2), 'sum', [3]))).toMatchObject({ code: 'E_ARGUMENT', message: expect.stringContaining("argument 'counts' must have 1 non-negative integers summing to 2, got [3]") });
    expect(await caught(c.broadcast(new Float32Array(2), 1))).toMatchObject({ code: 'E_ARGUMENT', message: "broadcast: argument 'root' must be an integer in [0, 1), got 1" });
    expect(collectiveCalls(addons[0]!.calls)).toEqual([]);
    // Argument errors leave the communicator usable.
    expect([...(await c.allReduce(new Float32Array([2])))]).toEqual([2]);
    await c.close();
  });

  it('close destroys the NCCL communicator once; later collectives give E_COLLECTIVE_CLOSED', async () => {
    const { comms, addons } = await fakeGroup(1);
    const c = comms[0]!;
    const pending = c.allReduce(new Float32Array([1]));
    await c.close(); // waits for the queued collective
    await c.close();
    await expect(pending).resolves.toEqual(new Float32Array([1]));
    expect(addons[0]!.calls.filter((x) => x.fn === 'destroy')).toHaveLength(1);
    expect(await caught(c.barrier())).toMatchObject({ code: 'E_COLLECTIVE_CLOSED', message: 'nccl: communicator of rank 0 is closed' });
  });

  describe('errors become typed PfcErrors', () => {
    const solo = (): Communicator => createLocalGroup(1)[0]!;

    it('libraries missing or no GPU: E_BACKEND_UNAVAILABLE with the install hint, before the bootstrap is used', async () => {
      const boot = solo();
      const broadcast = jest.spyOn(boot, 'broadcast');
      const missing = await caught(createNcclCommunicator(fakeNcclAddon({ loadError: 'libnccl.so.2 could not be loaded: not found' }), { bootstrap: { communicator: boot } }));
      expect(missing).toMatchObject({
        code: 'E_BACKEND_UNAVAILABLE',
        message: `nccl backend unavailable: libnccl.so.2 could not be loaded: not found; ${NCCL_INSTALL_HINT}`,
        details: { backend: 'nccl', ok: false },
      });
      const noGpu = await caught(createNcclCommunicator(fakeNcclAddon({ devices: 0 }), { bootstrap: { communicator: boot } }));
      expect(noGpu).toMatchObject({ code: 'E_BACKEND_UNAVAILABLE', message: `nccl backend unavailable: no CUDA device is visible; ${NCCL_INSTALL_HINT}` });
      expect(broadcast).not.toHaveBeenCalled();
    });

    it('ncclGetUniqueId fails: E_NCCL on rank 0; the others time out in the bootstrap broadcast', async () => {
      const boot = createLocalGroup(2, { timeoutMs: 200 });
      const results = await Promise.all(
        boot.map((b, r) => caught(createNcclCommunicator(fakeNcclAddon(r === 0 ? { uniqueIdError: 'ncclGetUniqueId: unhandled system error' } : {}), { bootstrap: { communicator: b } }))),
      );
      expect(results[0]).toMatchObject({ code: 'E_NCCL', message: 'nccl: rank 0: ncclGetUniqueId: unhandled system error', cause: expect.any(Error) });
      expect(results[1]).toMatchObject({ code: 'E_COLLECTIVE_TIMEOUT', message: 'local broadcast: rank(s) 0 did not join within 200 ms' });
    });

    it('ncclCommInitRank fails: E_NCCL naming the rank and device, with the binding error as cause', async () => {
      const boot = createLocalGroup(2);
      const results = await Promise.all(
        boot.map((b, r) =>
          caught(createNcclCommunicator(fakeNcclAddon({ devices: 2, initError: 'ncclCommInitRank: invalid usage' }), { bootstrap: { communicator: b }, device: r })),
        ),
      );
      expect(results.map((e) => [e.code, e.message])).toEqual([
        ['E_NCCL', 'nccl: rank 0 on device 0: ncclCommInitRank: invalid usage'],
        ['E_NCCL', 'nccl: rank 1 on device 1: ncclCommInitRank: invalid usage'],
      ]);
      expect((results[0]!.cause as Error).message).toBe('ncclCommInitRank: invalid usage');
    });

    it('a collective the binding rejects: E_NCCL naming the op and rank; the communicator stays failed; close still destroys', async () => {
      const message = 'ncclAllReduce(dsend, dsend, a_.length, t, op_, c->comm, c->stream): unhandled cuda error';
      const { comms, addons } = await fakeGroup(1, () => ({ failCollective: (i) => (i === 1 ? message : undefined) }));
      const c = comms[0]!;
      await c.allReduce(new Float32Array(1));
      const err = await caught(c.allReduce(new Float32Array(1)));
      expect(err).toMatchObject({ code: 'E_NCCL', message: `nccl allReduce: rank 0: ${message}`, details: { op: 'allReduce', rank: 0 }, cause: expect.any(Error) });
      // The ranks are out of step after an NCCL error: later calls fail with the same error instead of reaching NCCL.
      await expect(c.broadcast(new Float32Array(1))).rejects.toBe(err);
      expect(collectiveCalls(addons[0]!.calls)).toHaveLength(2);
      await c.close();
      expect(addons[0]!.calls.at(-1)).toEqual({ fn: 'destroy' });
    });
  });

  describe('timeouts', () => {
    it('a rank that stops calling collectives makes the others fail with E_COLLECTIVE_TIMEOUT; close leaves the stuck communicator alone', async () => {
      const { comms, addons } = await fakeGroup(2, () => ({}), { timeoutMs: 150 }, 1000);
      const t0 = Date.now();
      const err = await caught(comms[0]!.allReduce(new Float32Array(4))); // rank 1 never joins
      expect(Date.now() - t0).toBeLessThan(5000); // the 150 ms timeout, with room for a loaded CI machine; no default wait
      expect(err).toMatchObject({
        code: 'E_COLLECTIVE_TIMEOUT',
        message: 'nccl allReduce: rank 0 waited 150 ms; another rank died or stopped calling collectives. NCCL cannot cancel a collective: call abort() to end the job',
      });
      await expect(comms[0]!.barrier()).rejects.toBe(err);
      await comms[0]!.close();
      // ncclCommDestroy under a running collective would free the device buffer it uses.
      expect(addons[0]!.calls.some((c) => c.fn === 'destroy')).toBe(false);
      await comms[1]!.close();
    });

    it('abort goes to the bootstrap communicator (MPI: MPI_Abort)', async () => {
      const { comms, boot } = await fakeGroup(2);
      const abort = jest.spyOn(boot[1]!, 'abort');
      const reason = new Error('rank 1 data error');
      comms[1]!.abort(reason);
      expect(abort).toHaveBeenCalledWith(reason);
    });
  });

  describe('file bootstrap', () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'pfc-nccl-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('3 worker-thread ranks: rank 0 writes the id, the others read it, ncclCommInitRank blocks until all joined, then the file is removed', async () => {
      const file = join(dir, 'job.ncclid');
      const initBarrier = new SharedArrayBuffer(4);
      const out = (await runThreads(3, { module: join(__dirname, '__fixtures__', 'nccl-ranks.ts'), export: 'fileBootstrap', args: { file, initBarrier, large: 300 } })) as {
        report: ConformanceReport;
        calls: FakeNcclCall[];
      }[];
      const id = hex(Uint8Array.from({ length: 128 }, (_, i) => (10 + i) & 255)); // rank 0's fake id (seed 10)
      expect(out.map((o) => o.calls)).toEqual([
        [{ fn: 'available' }, { fn: 'uniqueId' }, { fn: 'initRank', id, nranks: 3, rank: 0, device: 0 }, { fn: 'destroy' }],
        [{ fn: 'available' }, { fn: 'initRank', id, nranks: 3, rank: 1, device: 0 }, { fn: 'destroy' }],
        [{ fn: 'available' }, { fn: 'initRank', id, nranks: 3, rank: 2, device: 0 }, { fn: 'destroy' }],
      ]);
      expect(existsSync(file)).toBe(false);
      expect(out.every((o) => o.report.checks.every((c) => c.ok))).toBe(true);
      const local = await runLocal(3, (c) => runConformance(c, { large: 300 }));
      expect(digests(out.map((o) => o.report))).toEqual(digests(local));
    });

    it('an id file left by an earlier job: rank 0 refuses it with E_ARGUMENT instead of handing out a stale id', async () => {
      const file = join(dir, 'job.ncclid');
      writeFileSync(file, new Uint8Array(128));
      const addon = fakeNcclAddon();
      const err = await caught(createNcclCommunicator(addon, { bootstrap: { file, rank: 0, worldSize: 2 } }));
      expect(err).toMatchObject({ code: 'E_ARGUMENT', message: expect.stringContaining(`${file} already exists (left by an earlier job?)`) });
      expect(addon.calls.map((c) => c.fn)).toEqual(['available']);
    });

    it('rank 0 never writes the file: E_COLLECTIVE_TIMEOUT after timeoutMs', async () => {
      const file = join(dir, 'job.ncclid');
      const err = await caught(createNcclCommunicator(fakeNcclAddon(), { bootstrap: { file, rank: 1, worldSize: 2, timeoutMs: 100 } }));
      expect(err).toMatchObject({ code: 'E_COLLECTIVE_TIMEOUT', message: `nccl bootstrap: ${file} did not appear within 100 ms (rank 0 writes it)` });
    });

    it('a file that is not a 128-byte id: E_NCCL', async () => {
      const file = join(dir, 'job.ncclid');
      writeFileSync(file, 'hello');
      const err = await caught(createNcclCommunicator(fakeNcclAddon(), { bootstrap: { file, rank: 1, worldSize: 2 } }));
      expect(err).toMatchObject({ code: 'E_NCCL', message: `nccl bootstrap: ${file} holds 5 bytes, expected a 128-byte ncclUniqueId` });
    });

    it.each([
      [2, 2],
      [-1, 2],
      [0, 0],
      [0.5, 2],
    ])('rank %d of world size %d: E_WORLD_SIZE', async (rank, worldSize) => {
      const err = await caught(createNcclCommunicator(fakeNcclAddon(), { bootstrap: { file: join(dir, 'id'), rank, worldSize } }));
      expect(err).toMatchObject({ code: 'E_WORLD_SIZE', message: expect.stringContaining(`got rank ${rank}, worldSize ${worldSize}`) });
    });
  });
});

describe('NCCL install hint', () => {
  it('a binding that is not built: E_BACKEND_UNAVAILABLE says how to build it and what NCCL needs', () => {
    let err: unknown;
    try {
      loadAddon('pfc_missing' as never, 'nccl', NCCL_BINDING_HINT);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'E_BACKEND_UNAVAILABLE', message: expect.stringContaining('npm run build:native -w @pfc/collective') });
    expect((err as Error).message).toContain(NCCL_INSTALL_HINT);
  });

  (built && !availability.ok ? it : it.skip)('the built binding without libnccl: NcclCommunicator.create fails before touching the bootstrap communicator', async () => {
    const boot = createLocalGroup(1)[0]!;
    const broadcast = jest.spyOn(boot, 'broadcast');
    const err = await caught(NcclCommunicator.create({ bootstrap: { communicator: boot } }));
    expect(err).toMatchObject({ code: 'E_BACKEND_UNAVAILABLE', message: expect.stringMatching(/^nccl backend unavailable: (the CUDA runtime \(libcudart\)|libnccl\.so\.2) could not be loaded/) });
    expect(err.message).toContain(NCCL_INSTALL_HINT);
    expect(broadcast).not.toHaveBeenCalled();
  });

  (mpiReady && built && !availability.ok ? it : it.skip)('under mpirun (MPI binding present) every rank gets E_BACKEND_UNAVAILABLE with the install hint', async () => {
    const run = await runMpiMain(2, 'nccl-unavailable', 20_000, 60_000);
    expect(run.code).toBe(0);
    expect(run.results).toEqual(new Array(2).fill({ code: 'E_BACKEND_UNAVAILABLE', message: expect.stringContaining(NCCL_INSTALL_HINT) }));
  });
});
