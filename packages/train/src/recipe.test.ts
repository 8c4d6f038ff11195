import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRecipeArgs, recipeMain } from './recipe';

const GLINT = { margin_list: [1.0, 0.0, 0.4], sample_rate: 0.1, num_classes: 360232, num_image: 17091657, rec: '/train_tmp/glint360k' };

describe('the examples command line (npm run train)', () => {
  it('--sample-rate and --set become config overrides; the other flags become runRecipe options', () => {
    expect(parseRecipeArgs(['--sample-rate', '1.0', '--set', 'batch_size=16', '--set', 'margin_list=[1,0.5,0]', '--set', 'network=r50', '--world-size', '4', '--resume'])).toEqual({
      worldSize: 4,
      resume: true,
      overrides: { sample_rate: 1, batch_size: 16, margin_list: [1, 0.5, 0], network: 'r50' },
    });
    // --sample-rate wins over a --set of the same field
    expect(parseRecipeArgs(['--set', 'sample_rate=0.5', '--sample-rate', '0.1'])).toEqual({ overrides: { sample_rate: 0.1 } });
    expect(parseRecipeArgs([])).toEqual({});
    expect(parseRecipeArgs(['-h'])).toBe('help');
  });
  it.each([
    [['--sample-rate', '0'], /--sample-rate must be a number in \(0, 1\], got '0'/],
    [['--sample-rate', '1.5'], /got '1.5'/],
    [['--sample-rate', 'half'], /got 'half'/],
    [['--set', 'batch_size'], /--set expects field=value, got 'batch_size'/],
    [['--world-size', '0'], /--world-size must be a positive integer, got '0'/],
    [['--bogus'], /Unknown option '--bogus'/],
  ])('%j is a usage error (exit 2) naming the value', async (argv, message) => {
    expect(() => parseRecipeArgs(argv)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT', message: expect.stringMatching(message) }));
    let out = '';
    expect(await recipeMain('glint360k', GLINT, argv, (s) => (out += s))).toBe(2);
    expect(out).toMatch(message);
    expect(out).toContain('Usage: npm run train');
  });
  it('--help names the recipe sample rate and the options to change it', async () => {
    let out = '';
    expect(await recipeMain('glint360k', GLINT, ['--help'], (s) => (out += s))).toBe(0);
    expect(out).toContain('recipe (sample rate 0.1)');
    expect(out).toMatch(/--sample-rate <r> .*default 0\.1/);
    expect(out).toContain('--set <field=value>');
    expect(out).toContain('npm run train -- --sample-rate 1.0');
  });
  it('--set reaches the config: an invalid field value stops the run with E_CONFIG before any data is written', async () => {
    let out = '';
    const workDir = mkdtempSync(join(tmpdir(), 'pfc-recipe-args-'));
    expect(await recipeMain('glint360k', GLINT, ['--set', 'batch_size=-1', '--tensor-backend', 'cpu', '--backend', 'local', '--work-dir', workDir], (s) => (out += s))).toBe(1);
    expect(out).toMatch(/error E_CONFIG: .*field 'batch_size' must be a positive integer, got -1/);
    expect(existsSync(join(workDir, 'synthetic'))).toBe(false);
  });
});
