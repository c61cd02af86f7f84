// A progress bar on stderr. On a terminal it redraws one line in place; in a
// CI log it prints one short line per step and nothing else.

export class Progress {
  private step = 0;
  private label = '';
  private detail = '';
  private lastDraw = 0;
  private readonly tty = process.stderr.isTTY === true;

  constructor(private readonly steps: number) {}

  start(label: string): void {
    this.step += 1;
    this.label = label;
    this.detail = '';
    if (this.tty) this.draw(true);
    else process.stderr.write(`[${this.step}/${this.steps}] ${label}\n`);
  }

  update(detail: string): void {
    this.detail = detail;
    if (this.tty) this.draw(false);
  }

  log(line: string): void {
    if (this.tty) process.stderr.write('\r\x1b[2K');
    process.stderr.write(line + '\n');
    if (this.tty) this.draw(true);
  }

  done(): void {
    if (this.tty) process.stderr.write('\r\x1b[2K');
  }

  private draw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const width = 24;
    const filled = Math.round((width * Math.max(0, this.step - 1)) / this.steps);
    const bar = '#'.repeat(filled) + '.'.repeat(width - filled);
    const text = `[${bar}] ${this.step}/${this.steps} ${this.label}${this.detail ? ' · ' + this.detail : ''}`;
    const cols = process.stderr.columns ?? 100;
    process.stderr.write('\r\x1b[2K' + text.slice(0, cols - 1));
  }
}
