import { pfcTsup } from '../../tooling/tsup';

// onnxruntime-node is an optional dependency and @pfc/backbone an optional runtime load: never bundle either
export default pfcTsup(
  {
    index: 'src/index.ts',
    cli: 'src/cli.ts',
  },
  { external: ['onnxruntime-node', '@pfc/backbone', 'sharp'] },
);
