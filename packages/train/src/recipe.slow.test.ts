import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runRecipe } from './recipe';
import { SHORT_RECIPE, SHORT_SYNTHETIC } from './__fixtures__/recipe-short';

describe('runRecipe (embedded synthetic default, shortened)', () => {
  it('trains 2 thread ranks with Partial FC 0.1 and verifies held-out identities well above chance', async () => {
    const workDir = mkdtempSync(join(tmpdir(), 'pfc-recipe-'));
    const lines: string[] = [];
    const r = await runRecipe(
      'glint360k',
      SHORT_RECIPE,
      {
        workDir,
        worldSize: 2,
        backend: 'threads',
        synthetic: SHORT_SYNTHETIC,
        log: (l) => lines.push(l),
      },
    );
    expect(r.config.sample_rate).toBe(0.1);
    expect(r.results).toHaveLength(2);
    expect(r.results[0]!.globalStep).toBe(37);
    const acc = r.verification.find((v) => v.name === 'synth_val')!.accuracy;
    // Chance is 0.5; 37 steps of a small iResNet already separate unseen identities.
    expect(acc).toBeGreaterThan(0.75);
    expect(r.ijbTable).toMatch(/Methods .*1e-06/);
    expect(r.ijbTar.find((t) => t.far === 0.1)!.tar).toBeGreaterThan(0.3);
    expect(existsSync(join(workDir, 'model.safetensors'))).toBe(true);
    expect(lines.some((l) => l.includes('verification accuracy'))).toBe(true);
  }, 900_000);
});
