import { pfcTsup } from '../../tooling/tsup';

export default pfcTsup({
  index: 'src/index.ts',
  cli: 'src/cli.ts',
  // runThreads starts each rank from this module (located beside the built index)
  'rank-entry': 'src/rank-entry.ts',
});
