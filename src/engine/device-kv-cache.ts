import type ort from 'onnxruntime-node';
import type { DeviceUploader } from './device-upload.js';
import type { KvCacheShape } from './kv-cache.js';
import type { LayerKeyValues } from '../deltas/kind.js';
import { EngineError } from './types.js';

/**
 * The KV cache in GPU memory (webgpu): per layer one keys and one values tensor,
 * [rows, maxLength, kvHeads, headDim], fed whole to every pass and replaced by the updated
 * tensors the pass returns (the graph scatters the new keys/values in; see the lowering's
 * `kvCache: 'device'`), so no cache byte crosses to the host after the zeroed upload at startup.
 *
 * The scheduler still sees logical rows that it keeps contiguous; moving a row is a change of
 * the logical → physical row table, not a copy: the graph gathers the pass's physical rows.
 * Capacity is fixed at maxLength (a device buffer cannot grow in place without a copy of every
 * layer, and GPU memory is what the cache is sized against).
 */
export class DeviceKvCache {
  private keys: ort.Tensor[] = [];
  private values: ort.Tensor[] = [];
  /** physical[logicalRow] */
  private readonly physical: number[];

  private constructor(readonly shape: KvCacheShape) {
    this.physical = Array.from({ length: shape.rows }, (_, r) => r);
  }

  static async create(shape: KvCacheShape, uploader: DeviceUploader): Promise<DeviceKvCache> {
    const cache = new DeviceKvCache(shape);
    const dims = cache.dims;
    const zeros = new Float32Array(dims.reduce((a, b) => a * b, 1));
    for (let layer = 0; layer < shape.layers; layer++) {
      cache.keys.push(await uploader.upload(zeros, dims));
      cache.values.push(await uploader.upload(zeros, dims));
    }
    return cache;
  }

  get dims(): number[] {
    return [this.shape.rows, this.shape.maxLength, this.shape.kvHeads, this.shape.headDim];
  }

  get capacity(): number {
    return this.shape.maxLength;
  }

  get byteLength(): number {
    return 2 * this.shape.layers * this.dims.reduce((a, b) => a * b, 4);
  }

  /** Capacity is fixed on the device. */
  reserve(_length: number): void {}

  fit(_longest: number): void {}

  /** Row `from`'s contents now belong to row `to`; `to`'s old physical row becomes `from`'s (free). */
  moveRow(from: number, to: number, _length: number): void {
    if (from === to) return;
    [this.physical[to], this.physical[from]] = [this.physical[from]!, this.physical[to]!];
  }

  /**
   * Nothing to clear: the graph reads a row's past only through a selection of the positions
   * before its length (see the lowering's deviceCache), so stale entries are never read.
   */
  clearRow(_row: number): void {}

  /** Virtual keys and values cannot be written into the device cache from JS (only a pass updates it). */
  writePrefix(_row: number, _layers: readonly LayerKeyValues[], _n: number): void {
    throw new EngineError('invalid_delta', 'prefix-tuning deltas are not served with --device webgpu yet (the device KV cache is written only by forward passes)');
  }

  /** Not readable from the device without a copy to the host; prompt-tuning prefixes are recomputed instead. */
  readPrefix(_row: number, _n: number): LayerKeyValues[] | undefined {
    return undefined;
  }

  /** Physical rows of logical rows [first, first + count). */
  rows(first: number, count: number): number[] {
    return this.physical.slice(first, first + count);
  }

  layer(layer: number): { key: ort.Tensor; value: ort.Tensor } {
    return { key: this.keys[layer]!, value: this.values[layer]! };
  }

  /** Takes the pass's updated tensors for a layer and frees the ones they replace. */
  replace(layer: number, key: ort.Tensor, value: ort.Tensor): void {
    const old = this.layer(layer);
    this.keys[layer] = key;
    this.values[layer] = value;
    if (old.key !== key) old.key.dispose();
    if (old.value !== value) old.value.dispose();
  }

  release(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
    this.keys = [];
    this.values = [];
  }
}
