import type { LayerKeyValues } from '../deltas/kind.js';

/**
 * The KV cache: one JS-owned buffer per layer for keys and one for values,
 * [rows, kvHeads, capacity, headDim]. A sequence owns a row for its lifetime. A forward pass over
 * rows [first, first+count) feeds a zero-copy view of that range as past_*; the graph returns only
 * the new tokens' keys/values, which `append` writes at their positions, so no step copies the cache.
 *
 * `capacity` (positions per row) grows geometrically up to `maxLength` as sequences get longer
 * and shrinks when they end: GroupQueryAttention on CPU copies its whole past buffer into its present
 * output on every run, so a buffer sized for the longest possible context made every decode step
 * pay for 2048 positions per row (26 of 58 ms at batch 8 on the bench model).
 */
export interface KvCacheShape {
  layers: number;
  rows: number;
  kvHeads: number;
  maxLength: number;
  headDim: number;
  /** Positions per row to start with (default 64, at most maxLength). */
  initialCapacity?: number;
}

export class KvCache {
  keys: Float32Array[];
  values: Float32Array[];
  private cap: number;
  /**
   * Per row, one past the last position ever written since the row was last cleared. Everything
   * at or beyond a row's live length is kept zero (see `clearRow`, `moveRow`): attention weights
   * masked positions by exactly 0, but 0 × NaN is NaN, so a stale value left by an earlier
   * occupant (a delta that produced NaN or Inf) would otherwise reach the next one.
   */
  private readonly written: Int32Array;

  constructor(readonly shape: KvCacheShape) {
    this.cap = Math.min(shape.maxLength, shape.initialCapacity ?? 64);
    this.keys = this.allocate();
    this.values = this.allocate();
    this.written = new Int32Array(shape.rows);
  }

  /** Positions each row holds now. */
  get capacity(): number {
    return this.cap;
  }

  /** Bytes held by the cache (keys and values, all layers). */
  get byteLength(): number {
    return 2 * this.shape.layers * this.shape.rows * this.rowStride * 4;
  }

  private get headStride(): number {
    return this.cap * this.shape.headDim;
  }

  private get rowStride(): number {
    return this.shape.kvHeads * this.headStride;
  }

  /**
   * Makes room for `length` positions per row, keeping every row's contents. Grows by a quarter
   * (at least `length`), in multiples of 32: a tight capacity keeps GroupQueryAttention's per-step
   * copy small, and growing geometrically keeps the re-layout copies amortised.
   */
  reserve(length: number): void {
    if (length > this.shape.maxLength) throw new Error(`KV cache holds at most ${this.shape.maxLength} positions, asked for ${length}`);
    if (length <= this.cap) return;
    const next = Math.ceil(Math.max(length, this.cap * 1.25) / 32) * 32;
    this.resize(Math.min(next, this.shape.maxLength));
  }

  /**
   * Gives memory back when the live rows need at most a quarter of the capacity (hysteresis, so
   * a sequence hovering at a boundary does not resize every step).
   */
  fit(longest: number): void {
    const floor = Math.min(this.shape.maxLength, this.shape.initialCapacity ?? 64);
    if (this.cap <= floor || longest * 4 > this.cap) return;
    this.resize(Math.max(floor, Math.ceil((longest * 1.25) / 32) * 32));
  }

  /** Views of rows [first, first + count) of one layer, laid out as the graph's [count, kvHeads, capacity, headDim]. */
  view(layer: number, first: number, count: number): { key: Float32Array; value: Float32Array; dims: number[] } {
    const begin = first * this.rowStride;
    const end = (first + count) * this.rowStride;
    const { kvHeads, headDim } = this.shape;
    return { key: this.keys[layer]!.subarray(begin, end), value: this.values[layer]!.subarray(begin, end), dims: [count, kvHeads, this.cap, headDim] };
  }

  /**
   * Writes new keys/values [count, seq, kvHeads*headDim] of rows [first, first+count) at positions
   * pastLengths[r] .. pastLengths[r] + lengths[r] - 1 (positions past a row's length are padding).
   */
  append(layer: number, first: number, pastLengths: readonly number[], lengths: readonly number[], seq: number, keys: Float32Array, values: Float32Array): void {
    const { kvHeads, headDim } = this.shape;
    const width = kvHeads * headDim;
    const { rowStride, headStride } = this;
    for (let r = 0; r < pastLengths.length; r++) this.written[first + r] = Math.max(this.written[first + r]!, pastLengths[r]! + lengths[r]!);
    for (const [target, source] of [[this.keys[layer]!, keys], [this.values[layer]!, values]] as const) {
      for (let r = 0; r < pastLengths.length; r++) {
        for (let s = 0; s < lengths[r]!; s++) {
          const from = (r * seq + s) * width;
          const position = pastLengths[r]! + s;
          for (let h = 0; h < kvHeads; h++) {
            const to = (first + r) * rowStride + h * headStride + position * headDim;
            target.set(source.subarray(from + h * headDim, from + (h + 1) * headDim), to);
          }
        }
      }
    }
  }

  /**
   * Copies the first `length` positions of row `from` into row `to` (compaction when a row frees
   * up) and zeroes what `to` held beyond them.
   */
  moveRow(from: number, to: number, length: number): void {
    if (from === to) return;
    const span = length * this.shape.headDim;
    const { rowStride, headStride } = this;
    for (const buffers of [this.keys, this.values]) {
      for (const buffer of buffers) {
        for (let h = 0; h < this.shape.kvHeads; h++) {
          const src = from * rowStride + h * headStride;
          buffer.copyWithin(to * rowStride + h * headStride, src, src + span);
        }
      }
    }
    this.zeroFrom(to, length);
  }

  /** Writes keys and values for positions [0, n) of a row (a delta's virtual positions), every layer. */
  writePrefix(row: number, layers: readonly LayerKeyValues[], n: number): void {
    this.reserve(n);
    layers.forEach((l, layer) => this.append(layer, row, [0], [n], n, l.key, l.value));
  }

  /** Copies positions [0, n) of a row out, every layer (what writePrefix takes). */
  readPrefix(row: number, n: number): LayerKeyValues[] {
    const { kvHeads, headDim } = this.shape;
    const width = kvHeads * headDim;
    const { rowStride, headStride } = this;
    return this.keys.map((_, layer) => {
      const out = { key: new Float32Array(n * width), value: new Float32Array(n * width) };
      for (const [source, target] of [[this.keys[layer]!, out.key], [this.values[layer]!, out.value]] as const) {
        for (let p = 0; p < n; p++) {
          for (let h = 0; h < kvHeads; h++) {
            const from = row * rowStride + h * headStride + p * headDim;
            target.set(source.subarray(from, from + headDim), p * width + h * headDim);
          }
        }
      }
      return out;
    });
  }

  /** Zeroes a row before a new sequence takes it, so nothing its last occupant wrote is ever read. */
  clearRow(row: number): void {
    this.zeroFrom(row, 0);
  }

  /** Zeroes positions [from, written) of one row in every layer and head. */
  private zeroFrom(row: number, from: number): void {
    const end = Math.min(this.written[row]!, this.cap);
    if (end > from) {
      const { rowStride, headStride } = this;
      const { headDim } = this.shape;
      for (const buffers of [this.keys, this.values]) {
        for (const buffer of buffers) {
          for (let h = 0; h < this.shape.kvHeads; h++) {
            const head = row * rowStride + h * headStride;
            buffer.fill(0, head + from * headDim, head + end * headDim);
          }
        }
      }
    }
    this.written[row] = from;
  }

  private allocate(): Float32Array[] {
    return Array.from({ length: this.shape.layers }, () => new Float32Array(this.shape.rows * this.rowStride));
  }

  /** Re-lays every layer out at a new capacity, copying min(old, new) positions of each row and head. */
  private resize(capacity: number): void {
    const { rows, kvHeads, headDim } = this.shape;
    const oldHead = this.headStride;
    const keep = Math.min(this.cap, capacity) * headDim;
    this.cap = capacity;
    const newHead = this.headStride;
    const relayout = (old: Float32Array[]) =>
      old.map((buffer) => {
        const next = new Float32Array(rows * kvHeads * newHead);
        for (let block = 0; block < rows * kvHeads; block++) next.set(buffer.subarray(block * oldHead, block * oldHead + keep), block * newHead);
        return next;
      });
    this.keys = relayout(this.keys);
    this.values = relayout(this.values);
    for (let row = 0; row < rows; row++) this.written[row] = Math.min(this.written[row]!, capacity);
  }
}
