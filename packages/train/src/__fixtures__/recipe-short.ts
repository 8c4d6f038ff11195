/**
 * The shortened embedded glint360k default the slow tests run, as a script: `recipe-short.ts <workDir> <out.json>`.
 * Under mpirun every process is one rank (the backend comes from the environment); rank 0 writes the result.
 */
import { writeFileSync } from 'node:fs';
import { runRecipe, type RecipeOptions } from '../recipe';

export const SHORT_RECIPE = { margin_list: [1.0, 0.0, 0.4], sample_rate: 0.1, num_classes: 360232, num_image: 17091657, rec: '/train_tmp/glint360k' };
export const SHORT_SYNTHETIC: RecipeOptions['synthetic'] = {
  identities: 300,
  perIdentity: 8,
  verificationIdentities: 100,
  verificationPairs: 400,
  ijbIdentities: 60,
  epochs: 1,
  batchSize: 32,
};

if (require.main === module) {
  const [workDir, out] = process.argv.slice(2);
  void runRecipe('glint360k', SHORT_RECIPE, { workDir: workDir!, synthetic: SHORT_SYNTHETIC, log: () => {} }).then((r) => {
    if (r.rank === 0) {
      writeFileSync(out!, JSON.stringify({ worldSize: r.results[0]!.worldSize, globalStep: r.results[0]!.globalStep, losses: r.results[0]!.losses, verification: r.verification, ijbTar: r.ijbTar }));
    }
  });
}
