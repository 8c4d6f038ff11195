import { PassThrough } from 'node:stream';
import { SpeedLogger } from './logging';
import { ttyStream } from './rank-entry';

describe('SpeedLogger (the reference CallBackLogging)', () => {
  it('starts the timer at the first multiple of frequent, then logs speed × world size, mean loss and ETA', () => {
    let t = 100;
    const lines: string[] = [];
    const scalars: [string, number, number][] = [];
    const writer = { addScalar: (tag: string, v: number, s: number) => scalars.push([tag, v, s]) } as never;
    const log = new SpeedLogger({ frequent: 2, batchSize: 8, worldSize: 2, totalStep: 10, startStep: 0, log: (l) => lines.push(l), writer, now: () => t });
    log.update(1, 0, 4, 0.1);
    t = 101;
    log.update(2, 0, 2, 0.1); // first multiple: only starts the timer
    expect(lines).toHaveLength(0);
    t = 103;
    log.update(3, 0, 1, 0.05);
    log.update(4, 0, 3, 0.05);
    expect(lines).toHaveLength(1);
    // speed = frequent·B/(now − tic)·W = 2·8/2·2 = 16; loss = mean of every loss since the start (no reset before) = 2.5
    // ETA: avg = (103 − 100)/(4 − 0 + 1) = 0.6 s/step, × (10 − 4 − 1) steps = 3 s.
    expect(lines[0]).toBe(`Speed 16.00 samples/sec   Loss 2.5000   LearningRate 0.050000   Epoch: 0   Global Step: 4   Required: ${(3 / 3600).toFixed(3)} hours`);
    expect(scalars.map((s) => s[0])).toEqual(['time_for_end', 'learning_rate', 'loss', 'samples_per_sec']);
    expect(log.last!.speed).toBeCloseTo(16, 12);
  });
  it('draws a progress bar on a TTY stream (ttyStream over a pipe, as for a worker-thread rank) and none on a pipe', async () => {
    const drawn = async (tty: boolean): Promise<string> => {
      const sink = new PassThrough();
      let text = '';
      sink.on('data', (b: Buffer) => (text += b.toString()));
      const stream = tty ? ttyStream(sink, 60) : sink;
      const log = new SpeedLogger({ frequent: 100, batchSize: 8, worldSize: 2, totalStep: 4, startStep: 0, log: () => {}, writer: null, stream });
      for (let s = 1; s <= 4; s++) log.update(s, 0, 1, 0.1);
      log.close();
      await new Promise((r) => setImmediate(r));
      return text;
    };
    const bar = await drawn(true);
    expect(bar).toMatch(/train \[[^\]]+\] 4\/4 /);
    expect(bar).toContain('\x1B[?25l'); // terminal control: the cursor is hidden while the bar redraws
    expect(await drawn(false)).toBe('');
  });
});
