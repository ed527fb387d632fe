import ort from 'onnxruntime-node';

/**
 * ORT silently ignores feeds whose names are not graph inputs, and leaves unfed optional inputs
 * at defaults: both would hide a wiring bug as wrong numbers. The engine checks every run.
 */
export function checkFeeds(inputNames: readonly string[], feeds: Record<string, ort.Tensor>): void {
  const expected = new Set(inputNames);
  const unknown = Object.keys(feeds).filter((name) => !expected.has(name));
  if (unknown.length) throw new Error(`feeds not in the graph: ${unknown.slice(0, 5).join(', ')}`);
  const missing = inputNames.filter((name) => !(name in feeds));
  if (missing.length) throw new Error(`graph inputs not fed: ${missing.slice(0, 5).join(', ')}`);
}

export const int64 = (values: ArrayLike<number>, dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(Array.from(values), (v) => BigInt(v)), dims);
export const int32 = (values: ArrayLike<number>, dims: number[]) => new ort.Tensor('int32', Int32Array.from(Array.from(values)), dims);
export const float32 = (values: Float32Array, dims: number[]) => new ort.Tensor('float32', values, dims);
