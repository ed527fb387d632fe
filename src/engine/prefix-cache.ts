import { LRUCache } from 'lru-cache';
import type { LayerKeyValues } from '../deltas/kind.js';

/**
 * Keys and values of prompt-tuning virtual tokens, computed once per combination of deltas and
 * then copied into every later row that uses the same combination: the virtual tokens are the
 * same for every request of a delta, so re-running them in every prefill would be waste. The key
 * is the row's whole delta set (a LoRA beside the prompt changes the virtual tokens' keys and
 * values too); least recently used entries go first once their bytes pass the bound.
 *
 * @example cache.get(PrefixCache.key(['acme/style@1'])) // per layer { key, value } or undefined
 */
export class PrefixCache {
  private readonly lru: LRUCache<string, LayerKeyValues[]>;

  constructor(maxBytes: number) {
    this.lru = new LRUCache<string, LayerKeyValues[]>({ maxSize: Math.max(1, maxBytes), sizeCalculation: (layers) => Math.max(1, layers.reduce((n, l) => n + l.key.byteLength + l.value.byteLength, 0)) });
  }

  /** The cache key of a row's deltas (order does not matter). */
  static key(deltas: readonly string[]): string {
    return [...deltas].sort().join('+');
  }

  get(key: string): LayerKeyValues[] | undefined {
    return this.lru.get(key);
  }

  set(key: string, layers: LayerKeyValues[]): void {
    this.lru.set(key, layers);
  }

  /** Drops every entry computed with a delta that is no longer served. */
  forget(delta: string): void {
    for (const key of [...this.lru.keys()]) if (key.split('+').includes(delta)) this.lru.delete(key);
  }

  get size(): number {
    return this.lru.size;
  }
}
