/**
 * A binary max-heap ordered by a caller's `better(a, b)` (true when a should come out first).
 * The BPE trainer keeps one entry per pair count it has seen and skips outdated ones on pop.
 */
export class MaxHeap<T> {
  private readonly items: T[] = [];

  /**
   * @example
   * const heap = new MaxHeap<number>((a, b) => a > b);
   * heap.push(1); heap.push(3); heap.pop(); // 3
   */
  constructor(private readonly better: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    const items = this.items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.better(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  /** The best item, removed; undefined when empty. */
  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length === 0 || last === undefined) return top;
    items[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < items.length && this.better(items[l]!, items[best]!)) best = l;
      if (r < items.length && this.better(items[r]!, items[best]!)) best = r;
      if (best === i) return top;
      [items[i], items[best]] = [items[best]!, items[i]!];
      i = best;
    }
  }
}
