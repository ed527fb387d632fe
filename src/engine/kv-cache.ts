/**
 * The KV cache: one JS-owned buffer per layer for keys and one for values, [rows, kvHeads, maxLength, headDim].
 * A sequence owns a row for its lifetime. A forward pass over rows [first, first+count) feeds a
 * zero-copy view of that range as past_*; the graph returns only the new tokens' keys/values,
 * which `append` writes at their positions, so no step copies the cache.
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

  /**
   * Writes new keys/values [count, seq, kvHeads*headDim] of rows [first, first+count) at positions
   * pastLengths[r] .. pastLengths[r] + lengths[r] - 1 (positions past a row's length are padding).
   */
  append(layer: number, first: number, pastLengths: readonly number[], lengths: readonly number[], seq: number, keys: Float32Array, values: Float32Array): void {
    const { kvHeads, headDim } = this.shape;
    const width = kvHeads * headDim;
    for (const [target, source] of [[this.keys[layer]!, keys], [this.values[layer]!, values]] as const) {
      for (let r = 0; r < pastLengths.length; r++) {
        for (let s = 0; s < lengths[r]!; s++) {
          const from = (r * seq + s) * width;
          const position = pastLengths[r]! + s;
          for (let h = 0; h < kvHeads; h++) {
            const to = (first + r) * this.rowStride + h * this.headStride + position * headDim;
            target.set(source.subarray(from + h * headDim, from + (h + 1) * headDim), to);
          }
        }
      }
    }
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
