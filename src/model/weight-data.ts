import type { TensorData } from '../graph/ir.js';
import type { Checkpoint } from './checkpoint.js';

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
