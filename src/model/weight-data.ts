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
