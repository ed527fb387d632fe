/**
 * Finds stop strings in generated text as it grows. Text that could still become a stop string
 * is held back, so a stop string is never emitted, even partially, when streaming.
 */
export class StopMatcher {
  private buffer = '';

  constructor(private readonly stops: readonly string[]) {}

  /** Adds text; returns what is safe to emit now and whether a stop string was reached. */
  push(text: string): { emit: string; stopped: boolean } {
    this.buffer += text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.buffer.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      const emit = this.buffer.slice(0, cut);
      this.buffer = '';
      return { emit, stopped: true };
    }
    const hold = this.heldBack();
    const emit = this.buffer.slice(0, this.buffer.length - hold);
    this.buffer = this.buffer.slice(this.buffer.length - hold);
    return { emit, stopped: false };
  }

  /** Whatever was held back, once generation ended without a stop. */
  flush(): string {
    const rest = this.buffer;
    this.buffer = '';
    return rest;
  }

  /** Length of the longest suffix of the buffer that is a proper prefix of some stop string. */
  private heldBack(): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.buffer.length); n > longest; n--) {
        if (this.buffer.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }
}
