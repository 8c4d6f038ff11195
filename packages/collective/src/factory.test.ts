import { join } from 'node:path';
import { backendFromEnv, communicatorFromEnv, createCommunicator, ncclDevice, runRank } from './factory';
import { runThreads } from './launch';

describe('createCommunicator / communicatorFromEnv', () => {
  it('picks mpi under mpirun or a PMI launcher, PFC_COLLECTIVE when set, else local', () => {
    expect(backendFromEnv({})).toBe('local');
    expect(backendFromEnv({ OMPI_COMM_WORLD_SIZE: '2' })).toBe('mpi');
    expect(backendFromEnv({ PMI_SIZE: '4' })).toBe('mpi');
    expect(backendFromEnv({ PMIX_RANK: '0' })).toBe('mpi');
    expect(backendFromEnv({ OMPI_COMM_WORLD_SIZE: '2', PFC_COLLECTIVE: 'nccl' })).toBe('nccl');
    expect(() => backendFromEnv({ PFC_COLLECTIVE: 'gloo' })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT', message: expect.stringContaining('"gloo"') }));
  });

  it('local: one rank whose collectives are identities', async () => {
    const c = await communicatorFromEnv({ env: {} });
    expect([c.backend, c.rank, c.worldSize]).toEqual(['local', 0, 1]);
    expect([...(await c.allReduce(new Float32Array([1.5, NaN]), 'max'))]).toEqual([1.5, NaN]);
    expect([...(await c.allGather(new Int32Array([4, 5])))]).toEqual([4, 5]);
  });

  it('threads: the rank communicator inside runThreads, an error outside', async () => {
    await expect(createCommunicator({ backend: 'threads', env: {} })).rejects.toMatchObject({ code: 'E_BACKEND_UNAVAILABLE', message: expect.stringContaining('runThreads') });
    const out = await runThreads(2, { module: join(__dirname, '__fixtures__', 'ranks.ts'), export: 'factoryInRank' });
    expect(out).toEqual([
      { same: true, backend: 'threads' },
      { same: true, backend: 'threads' },
    ]);
  });

  it('nccl without mpirun and without the file bootstrap variables says what to set', async () => {
    await expect(createCommunicator({ backend: 'nccl', env: {} })).rejects.toMatchObject({ code: 'E_BACKEND_UNAVAILABLE' });
  });

  it('picks the NCCL device: PFC_CUDA_DEVICE, one visible GPU, the node-local rank, else 0', () => {
    expect(ncclDevice({})).toBe(0);
    expect(ncclDevice({ OMPI_COMM_WORLD_LOCAL_RANK: '3' })).toBe(3);
    expect(ncclDevice({ LOCAL_RANK: '2' })).toBe(2);
    expect(ncclDevice({ OMPI_COMM_WORLD_LOCAL_RANK: '3', CUDA_VISIBLE_DEVICES: '3' })).toBe(0);
    expect(ncclDevice({ OMPI_COMM_WORLD_LOCAL_RANK: '3', CUDA_VISIBLE_DEVICES: '0,1,2,3' })).toBe(3);
    expect(ncclDevice({ OMPI_COMM_WORLD_LOCAL_RANK: '3', PFC_CUDA_DEVICE: '1' })).toBe(1);
  });

  it('rejects an unknown backend', async () => {
    await expect(createCommunicator({ backend: 'gloo' as never })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });

  it('runRank runs a function as this process\'s rank, closes on success, reports and rethrows a failure', async () => {
    await expect(runRank(async (c) => [c.backend, c.rank, c.worldSize], { env: {} })).resolves.toEqual(['local', 0, 1]);
    const seen: unknown[] = [];
    const boom = new Error('boom');
    await expect(runRank(() => Promise.reject(boom), { env: {}, onError: (e) => seen.push(e) })).rejects.toBe(boom);
    expect(seen).toEqual([boom]);
  });
});
