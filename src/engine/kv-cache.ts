/**
 * The KV cache: one JS-owned buffer per layer for keys and one for values, [rows, kvHeads, maxLength, headDim].
 * A sequence owns a row for its lifetime. A forward pass over rows [first, first+count) feeds a
 * zero-copy view of that range as past_* and fetches present_* into the same memory, so
 * GroupQueryAttention appends the new keys/values in place and no step copies the cache.
 */
export interface KvCacheShape {
  layers: number;
  rows: number;
  kvHeads: number;
  maxLength: number;
  headDim: number;
}

export class KvCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  private readonly rowStride: number;
  private readonly headStride: number;

  constructor(readonly shape: KvCacheShape) {
    this.headStride = shape.maxLength * shape.headDim;
    this.rowStride = shape.kvHeads * this.headStride;
    const perLayer = shape.rows * this.rowStride;
    this.keys = Array.from({ length: shape.layers }, () => new Float32Array(perLayer));
    this.values = Array.from({ length: shape.layers }, () => new Float32Array(perLayer));
  }

  /** Bytes held by the cache (keys and values, all layers). */
  get byteLength(): number {
    return 2 * this.shape.layers * this.shape.rows * this.rowStride * 4;
  }

  /** Views of rows [first, first + count) of one layer, laid out as the graph's [count, kvHeads, maxLength, headDim]. */
  view(layer: number, first: number, count: number): { key: Float32Array; value: Float32Array; dims: number[] } {
    const begin = first * this.rowStride;
    const end = (first + count) * this.rowStride;
    const { kvHeads, maxLength, headDim } = this.shape;
    return { key: this.keys[layer]!.subarray(begin, end), value: this.values[layer]!.subarray(begin, end), dims: [count, kvHeads, maxLength, headDim] };
  }

  /** Copies the first `length` positions of row `from` into row `to` (compaction when a row frees up). */
  moveRow(from: number, to: number, length: number): void {
    if (from === to || length === 0) return;
    const span = length * this.shape.headDim;
    for (const buffers of [this.keys, this.values]) {
      for (const buffer of buffers) {
        for (let h = 0; h < this.shape.kvHeads; h++) {
          const src = from * this.rowStride + h * this.headStride;
          buffer.copyWithin(to * this.rowStride + h * this.headStride, src, src + span);
        }
      }
    }
  }
}
