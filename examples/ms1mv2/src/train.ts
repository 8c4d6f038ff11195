/**
 * `npm run train` — the ms1mv2 recipe. With `--data <dir>` (a `train.rec/.idx` + verification `.bin` directory) it
 * trains the reference config; without, the embedded synthetic default (see README.md).
 */
import { recipeMain } from '@pfc/train';
import config from './config';

void recipeMain('ms1mv2', config, process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
