import { pfcTsup } from '../../tooling/tsup';

export default pfcTsup({
  index: 'src/index.ts',
  cli: 'src/cli.ts',
});
