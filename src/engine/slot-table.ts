/**
 * Which delta occupies which resident slot. `occupants` is the single record of residency;
 * a slot used by a running sequence is pinned and never evicted. Free slots are taken lowest
 * first so the slot range a batch reads stays small.
 */
export class SlotTable {
  readonly occupants: (string | null)[];
  private readonly pins: number[];
  private readonly lastUsed: number[];
  private clock = 0;

  constructor(slots: number) {
    this.occupants = Array<string | null>(slots).fill(null);
    this.pins = Array<number>(slots).fill(0);
    this.lastUsed = Array<number>(slots).fill(0);
  }

  find(delta: string): number {
    return this.occupants.indexOf(delta);
  }

  /**
   * The slot to load `delta` into: a free slot, else the least recently used unpinned one.
   * Returns the slot and the delta it evicts (null when it was free), or undefined when every slot is pinned.
   */
  chooseVictim(): { slot: number; evicted: string | null } | undefined {
    const free = this.occupants.indexOf(null);
    if (free >= 0) return { slot: free, evicted: null };
    let victim = -1;
    for (let s = 0; s < this.occupants.length; s++) {
      if (this.pins[s] === 0 && (victim < 0 || this.lastUsed[s]! < this.lastUsed[victim]!)) victim = s;
    }
    return victim < 0 ? undefined : { slot: victim, evicted: this.occupants[victim]! };
  }

  assign(slot: number, delta: string): void {
    this.occupants[slot] = delta;
    this.pins[slot] = 0;
    this.lastUsed[slot] = ++this.clock;
  }

  evict(delta: string): number {
    const slot = this.find(delta);
    if (slot >= 0 && this.pins[slot] === 0) this.occupants[slot] = null;
    return slot;
  }

  pin(slot: number): void {
    this.pins[slot]!++;
    this.lastUsed[slot] = ++this.clock;
  }

  unpin(slot: number): void {
    if (this.pins[slot]! > 0) this.pins[slot]!--;
  }
}
