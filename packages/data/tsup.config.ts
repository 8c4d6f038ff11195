import { pfcTsup } from '../../tooling/tsup';

export default pfcTsup({
  index: 'src/index.ts',
  cli: 'src/cli.ts',
  // the loader starts this file in worker_threads (located beside the built index)
  'decode-worker': 'src/decode-worker.ts',
});
