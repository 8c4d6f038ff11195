import { Progress } from '@pfc/core';
import type { SummaryWriter } from './tensorboard';

/** Running mean since the last reset (the reference's `AverageMeter`). */
export class AverageMeter {
  sum = 0;
  count = 0;
  update(v: number, n = 1): void {
    this.sum += v * n;
    this.count += n;
  }
  get avg(): number {
    return this.count > 0 ? this.sum / this.count : 0;
  }
  reset(): void {
    this.sum = 0;
    this.count = 0;
  }
}

export interface SpeedLoggerOptions {
  frequent: number;
  batchSize: number;
  worldSize: number;
  totalStep: number;
  startStep: number;
  /** Where lines go (rank 0 only). */
  log: (line: string) => void;
  writer: SummaryWriter | null;
  /** Draw a progress bar on this stream when it is a TTY. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  now?: () => number;
}

/**
 * The reference's `CallBackLogging`: every `frequent` steps (the first time only starting the timer) prints
 * "Speed … samples/sec   Loss …   LearningRate …   Epoch: …   Global Step: …   Required: … hours" with the speed
 * over the last `frequent` steps (× world size), the running-mean loss since the previous line and the ETA; writes
 * the TensorBoard scalars `time_for_end`, `learning_rate`, `loss` (and `samples_per_sec`). On a TTY a progress bar
 * is drawn as well.
 */
export class SpeedLogger {
  readonly meter = new AverageMeter();
  private tic: number | null = null;
  private readonly start: number;
  private readonly now: () => number;
  private readonly bar: Progress | null;
  /** The last printed values, for callers and tests. */
  last: { speed: number; loss: number; lr: number; etaHours: number } | null = null;

  constructor(private readonly o: SpeedLoggerOptions) {
    this.now = o.now ?? (() => Date.now() / 1000);
    this.start = this.now();
    this.bar = o.stream?.isTTY ? new Progress({ total: o.totalStep, label: 'train', unit: 'step', stream: o.stream }) : null;
    if (this.bar) this.bar.tick(o.startStep);
  }

  /** Called after every micro-batch with its loss and the learning rate it ran at. */
  update(globalStep: number, epoch: number, loss: number, lr: number): void {
    this.meter.update(loss);
    this.bar?.tick();
    if (!(globalStep > 0 && globalStep % this.o.frequent === 0)) return;
    const t = this.now();
    if (this.tic === null) {
      this.tic = t;
      return;
    }
    const speed = ((this.o.frequent * this.o.batchSize) / Math.max(t - this.tic, 1e-9)) * this.o.worldSize;
    const avg = (t - this.start) / (globalStep - this.o.startStep + 1);
    const etaHours = (avg * (this.o.totalStep - globalStep - 1)) / 3600;
    const lossAvg = this.meter.avg;
    this.last = { speed, loss: lossAvg, lr, etaHours };
    this.o.log(
      `Speed ${speed.toFixed(2)} samples/sec   Loss ${lossAvg.toFixed(4)}   LearningRate ${lr.toFixed(6)}   Epoch: ${epoch}   Global Step: ${globalStep}   Required: ${etaHours.toFixed(etaHours < 1 ? 3 : 1)} hours`,
    );
    const w = this.o.writer;
    if (w) {
      w.addScalar('time_for_end', etaHours, globalStep);
      w.addScalar('learning_rate', lr, globalStep);
      w.addScalar('loss', lossAvg, globalStep);
      w.addScalar('samples_per_sec', speed, globalStep);
    }
    this.meter.reset();
    this.tic = t;
  }

  close(): void {
    this.bar?.stop();
  }
}
