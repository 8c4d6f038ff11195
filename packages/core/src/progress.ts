import { SingleBar } from 'cli-progress';

export interface ProgressOptions {
  /** Total units of work (steps, images); 0 when unknown. */
  total: number;
  /** What is being done, printed before the counts. */
  label: string;
  /** Name of one unit in the rate (`img`, `step`, `rec`). */
  unit?: string;
  /** Output stream (default stderr). A TTY gets a redrawn bar, anything else plain lines. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Minimum milliseconds between plain lines (default 2000). */
  intervalMs?: number;
  /** Disable all output. */
  silent?: boolean;
}

/** Seconds as `1h02m03s`, `4m05s` or `6s`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m${String(r).padStart(2, '0')}s`;
  if (m > 0) return `${m}m${String(r).padStart(2, '0')}s`;
  return `${r}s`;
}

/**
 * Progress of long work: done/total, units per second and ETA. On a TTY a bar (cli-progress) is redrawn;
 * otherwise a plain line is printed at most every `intervalMs`, so logs stay readable.
 */
export class Progress {
  readonly total: number;
  private done = 0;
  private readonly start = Date.now();
  private lastLine = 0;
  private readonly bar: SingleBar | null;
  private readonly opts: Required<Omit<ProgressOptions, 'stream'>> & { stream: NodeJS.WritableStream & { isTTY?: boolean } };

  constructor(options: ProgressOptions) {
    this.total = options.total;
    this.opts = { unit: 'it', intervalMs: 2000, silent: false, stream: process.stderr, ...options };
    const tty = !this.opts.silent && this.opts.stream.isTTY === true;
    this.bar = tty
      ? new SingleBar({
          format: `${this.opts.label} [{bar}] {value}/{total} {rate} ${this.opts.unit}/s ETA {eta_formatted}`,
          stream: this.opts.stream as NodeJS.WritableStream,
          hideCursor: true,
          etaBuffer: 50,
        })
      : null;
    this.bar?.start(Math.max(this.total, 1), 0, { rate: '0.0' });
  }

  /** Units completed so far. */
  get count(): number {
    return this.done;
  }

  /** Units per second since the start. */
  get rate(): number {
    const dt = (Date.now() - this.start) / 1000;
    return dt > 0 ? this.done / dt : 0;
  }

  /** Marks `n` more units done. */
  tick(n = 1): void {
    this.done += n;
    if (this.opts.silent) return;
    if (this.bar) {
      this.bar.update(this.done, { rate: this.rate.toFixed(1) });
      return;
    }
    const now = Date.now();
    if (now - this.lastLine >= this.opts.intervalMs || (this.total > 0 && this.done >= this.total)) {
      this.lastLine = now;
      this.opts.stream.write(`${this.line()}\n`);
    }
  }

  /** The status line: `label done/total (pct) rate unit/s ETA`. */
  line(): string {
    const rate = this.rate;
    const pct = this.total > 0 ? ` (${((100 * this.done) / this.total).toFixed(1)}%)` : '';
    const eta = this.total > 0 && rate > 0 ? ` ETA ${formatDuration((this.total - this.done) / rate)}` : '';
    return `${this.opts.label} ${this.done}${this.total > 0 ? `/${this.total}` : ''}${pct} ${rate.toFixed(1)} ${this.opts.unit}/s${eta}`;
  }

  /** Stops the bar (or prints the final line). */
  stop(): void {
    if (this.bar) this.bar.stop();
    else if (!this.opts.silent && this.done > 0 && Date.now() - this.lastLine > 0 && !(this.total > 0 && this.done >= this.total)) {
      this.opts.stream.write(`${this.line()}\n`);
    }
  }
}
