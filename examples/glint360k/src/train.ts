/**
 * `npm run train` — the glint360k recipe. With `--data <dir>` (a `train.rec/.idx` + verification `.bin` directory) it
 * trains the reference config; without, the embedded synthetic default (see README.md).
 */
import { recipeMain } from '@pfc/train';
import config from './config';

void recipeMain('glint360k', config, process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
