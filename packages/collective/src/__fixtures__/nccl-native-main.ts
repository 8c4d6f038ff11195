/**
 * One NCCL rank on the real binding, for the test that runs it over the fake libcudart/libnccl.so.2
 * (fake-cuda-nccl.c): one collective of each kind and dtype; prints the results as JSON, or the error.
 */
import { createCommunicator } from '../factory';

void (async () => {
  try {
    const comm = await createCommunicator({ backend: 'nccl' });
    const out = {
      f32: [...(await comm.allReduce(new Float32Array([1.5, -2]), 'sum'))],
      f64: [...(await comm.allReduce(new Float64Array([3, 4, 5]), 'max'))],
      i32: [...(await comm.broadcast(new Int32Array([7, 8]), 0))],
      f16: [...(await comm.allGather(new Uint16Array([0x3c00, 0x4000, 0xc000])))],
      rs: [...(await comm.reduceScatter(new Float32Array([0.25, 0.5]), 'max'))],
    };
    await comm.close();
    process.stdout.write(JSON.stringify(out));
  } catch (err) {
    process.stdout.write(JSON.stringify({ code: (err as { code?: string }).code, message: (err as Error).message }));
  }
})();
