/** One NCCL rank for the GPU test: prints its conformance report as JSON. */
import { runConformance } from '../conformance';
import { createCommunicator } from '../factory';

void (async () => {
  const comm = await createCommunicator({ backend: 'nccl' });
  const report = await runConformance(comm, { large: 5000 });
  await comm.close();
  process.stdout.write(JSON.stringify(report));
})();
