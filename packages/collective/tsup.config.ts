import { pfcTsup } from '../../tooling/tsup';

export default pfcTsup({
  index: 'src/index.ts',
  'threads-worker': 'src/threads-worker.ts',
});
