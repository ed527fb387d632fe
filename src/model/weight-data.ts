import fs from 'node:fs';
import type { TensorData } from '../graph/ir.js';
import type { Checkpoint } from './checkpoint.js';
import { toFloat32 } from './safetensors.js';

/**
 * A checkpoint weight as an external initializer pointing straight into its safetensors file
 * (`weightFile` maps the checkpoint file to the name the session sees). Both lowerings use it,
 * so inference and training read the very same frozen bytes.
 */
export function checkpointWeight(ckpt: Checkpoint, name: string, weightFile: (file: string) => string): TensorData {
  const location = ckpt.weights.get(name);
  if (!location) throw new Error(`checkpoint has no weight ${name}`);
  const { entry } = location;
  return {
    kind: 'external',
    dtype: entry.dtype === 'F32' ? 'float32' : entry.dtype === 'F16' ? 'float16' : 'bfloat16',
    dims: entry.shape,
    location: weightFile(location.file),
    offset: entry.fileOffset,
    length: entry.byteLength,
  };
}

/**
 * `name` → the graph value of that frozen weight as float32: its external initializer, behind a
 * Cast when stored as F16/BF16 (cast once by ORT at load). Each weight is added once, however many
 * times it is asked for (tied embeddings ask twice). `graph` adds initializers and Cast nodes in
 * whichever builder the lowering uses.
 */
export function frozenWeights(
  ckpt: Checkpoint,
  weightFile: (file: string) => string,
  graph: { initializer(name: string, data: TensorData): string; castToFloat32(value: string): string },
): (name: string) => string {
  const values = new Map<string, string>();
  return (name) => {
    let value = values.get(name);
    if (!value) {
      const data = checkpointWeight(ckpt, name, weightFile);
      const init = graph.initializer(name, data);
      value = data.dtype === 'float32' ? init : graph.castToFloat32(init);
      values.set(name, value);
    }
    return value;
  };
}

/**
 * One frozen weight's values as float32, read from its checkpoint file (F16/BF16 converted
 * exactly). For the few parse-time computations that need the backbone itself (DoRA's weight
 * norms); the graph never goes through this.
 *
 * @example readCheckpointWeight(ckpt, 'model.layers.0.self_attn.q_proj.weight').length // out * in
 */
export function readCheckpointWeight(ckpt: Checkpoint, name: string): Float32Array {
  const location = ckpt.weights.get(name);
  if (!location) throw new Error(`checkpoint has no weight ${name}`);
  const { entry, file } = location;
  const bytes = new Uint8Array(entry.byteLength);
  const fd = fs.openSync(file, 'r');
  try {
    for (let done = 0; done < bytes.length; ) {
      const n = fs.readSync(fd, bytes, done, bytes.length - done, entry.fileOffset + done);
      if (n === 0) throw new Error(`${file}: truncated while reading weight ${name}`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return toFloat32(entry.dtype, bytes);
}

/**
 * Rows of a 2-D frozen weight as float32 (F16/BF16 converted exactly), read row by row, so
 * embedding a few tokens does not read a whole vocabulary (prompt tuning's TEXT init).
 *
 * @example readCheckpointRows(ckpt, 'model.embed_tokens.weight', [5, 9, 5]).length // 3 * hidden
 */
export function readCheckpointRows(ckpt: Checkpoint, name: string, rows: readonly number[]): Float32Array {
  const location = ckpt.weights.get(name);
  if (!location) throw new Error(`checkpoint has no weight ${name}`);
  const { entry, file } = location;
  const [count, width] = entry.shape as [number, number];
  if (entry.shape.length !== 2) throw new Error(`${name} has shape [${entry.shape}]; rows need a 2-D weight`);
  const rowBytes = entry.byteLength / count;
  const out = new Float32Array(rows.length * width);
  const fd = fs.openSync(file, 'r');
  try {
    rows.forEach((row, i) => {
      if (!Number.isInteger(row) || row < 0 || row >= count) throw new RangeError(`row ${row} of ${name} is outside [0, ${count})`);
      const bytes = new Uint8Array(rowBytes);
      if (fs.readSync(fd, bytes, 0, rowBytes, entry.fileOffset + row * rowBytes) !== rowBytes) throw new Error(`${file}: truncated while reading ${name} row ${row}`);
      out.set(toFloat32(entry.dtype, bytes), i * width);
    });
  } finally {
    fs.closeSync(fd);
  }
  return out;
}
