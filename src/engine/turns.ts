/**
 * At most `limit` holders at a time, the rest served first come first served. A finishing holder
 * hands its turn straight to the next waiter, so a caller arriving in between cannot jump the queue.
 *
 * @example const turns = new Turns(2); await turns.run(() => load(name));
 */
export class Turns {
  private readonly waiting: (() => void)[] = [];
  private holders = 0;

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await work();
    } finally {
      this.release();
    }
  }

  /** Holders now, and callers waiting for a turn. */
  get stats(): { running: number; waiting: number } {
    return { running: this.holders, waiting: this.waiting.length };
  }

  private async acquire(): Promise<void> {
    if (this.holders < this.limit) {
      this.holders++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.holders--;
  }
}
