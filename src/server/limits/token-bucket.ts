/** The outcome of {@link TokenBucket.take}: granted, or the whole milliseconds until it would be. */
export type TakeResult = { ok: true } | { ok: false; retryAfterMs: number };

export interface TokenBucketOptions {
  /** The most tokens the bucket holds: the burst. It starts full. */
  capacity: number;
  /** Tokens added per second. 0 means unlimited: every take succeeds and debits are ignored. */
  ratePerSecond: number;
}

/**
 * A token bucket on a clock the caller passes in (`now`, in milliseconds, to every call), so it
 * keeps no timers and tests need none. It starts full, refills at `ratePerSecond` up to
 * `capacity`, and a refused `take` changes nothing. `debit` charges after the fact and may leave
 * the balance negative: generated tokens are known only once produced, so the debt makes the
 * *next* caller wait. A clock that steps back refills nothing until it passes its latest reading.
 *
 * @example
 * const bucket = new TokenBucket({ capacity: 10, ratePerSecond: 5 });
 * bucket.take(10, 0); // { ok: true }
 * bucket.take(1, 0); // { ok: false, retryAfterMs: 200 }
 * bucket.debit(4, 200); // balance 1 - 4 = -3
 * bucket.take(1, 200); // { ok: false, retryAfterMs: 800 }
 */
export class TokenBucket {
  readonly capacity: number;
  readonly ratePerSecond: number;
  private tokens: number;
  /** When `tokens` was measured; -Infinity before the first charge, as a full bucket needs no start time. */
  private updatedAt = -Infinity;

  constructor(options: TokenBucketOptions) {
    const { capacity, ratePerSecond } = options;
    if (!Number.isFinite(ratePerSecond) || ratePerSecond < 0) throw new RangeError(`token bucket: ratePerSecond must be a finite number >= 0, 0 for unlimited (got ${ratePerSecond})`);
    if (ratePerSecond > 0 && !(Number.isFinite(capacity) && capacity > 0)) throw new RangeError(`token bucket: capacity must be a finite number > 0 (got ${capacity})`);
    this.capacity = capacity;
    this.ratePerSecond = ratePerSecond;
    this.tokens = capacity;
  }

  /** Rate 0: no limit at all. */
  get unlimited(): boolean {
    return this.ratePerSecond === 0;
  }

  /** The balance at `now` (negative while in debt; Infinity when unlimited). */
  available(now: number): number {
    return this.unlimited ? Infinity : this.levelAt(now);
  }

  /**
   * Whole milliseconds from `now` until `n` tokens are available: 0 if they are now (or `n` is 0),
   * Infinity if `n` exceeds the capacity. Exact: `take(n, now + waitMs(n, now))` succeeds and one
   * millisecond earlier it does not (with no other charges in between).
   */
  waitMs(n: number, now: number): number {
    checkAmount(n, 'waitMs');
    if (this.unlimited || n === 0 || this.levelAt(now) >= n) return 0;
    if (n > this.capacity) return Infinity;
    const from = Math.max(now, this.updatedAt);
    let ms = Math.max(1, Math.ceil(from - now + ((n - this.levelAt(from)) * 1000) / this.ratePerSecond));
    // The estimate can be a millisecond off by rounding; step to the exact answer.
    while (this.levelAt(now + ms) < n) ms++;
    while (ms > 1 && this.levelAt(now + ms - 1) >= n) ms--;
    return ms;
  }

  /** Takes `n` tokens if all of them are available, else takes none and says how long to wait. */
  take(n: number, now: number): TakeResult {
    const retryAfterMs = this.waitMs(n, now);
    if (retryAfterMs > 0) return { ok: false, retryAfterMs };
    this.charge(n, now);
    return { ok: true };
  }

  /** Subtracts `n` tokens spent already, even into debt. */
  debit(n: number, now: number): void {
    checkAmount(n, 'debit');
    this.charge(n, now);
  }

  private charge(n: number, now: number): void {
    if (this.unlimited) return;
    this.tokens = this.levelAt(now) - n;
    this.updatedAt = Math.max(this.updatedAt, now);
  }

  private levelAt(now: number): number {
    return Math.min(this.capacity, this.tokens + (Math.max(0, now - this.updatedAt) * this.ratePerSecond) / 1000);
  }
}

function checkAmount(n: number, what: string): void {
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`token bucket ${what}: the amount must be a finite number >= 0 (got ${n})`);
}
