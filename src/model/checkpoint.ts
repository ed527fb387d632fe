import fs from 'node:fs';
import path from 'node:path';
import { allProjections, type ArchitectureSpec, type NormSpec } from './architecture.js';
import { ModelLoadError } from './errors.js';
import { describeArchitecture, type HfConfig } from './families/index.js';
import { readSafetensorsHeader, readShardedIndex, SafetensorsError, type TensorEntry } from './safetensors.js';

/** Where one weight lives: a checkpoint file and the tensor's entry in its header. */
export interface WeightLocation {
  file: string;
  entry: TensorEntry;
}

/** A validated Hugging Face model directory: config, architecture and the location of every weight. */
export interface Checkpoint {
  dir: string;
  config: HfConfig;
  generationConfig: HfConfig;
  arch: ArchitectureSpec;
  weights: Map<string, WeightLocation>;
  files: string[];
}

/**
 * Opens a model directory, reading only JSON and safetensors headers (never the weights).
 * Every tensor the architecture needs must exist with the expected shape.
 *
 * @example const ckpt = openCheckpoint('/models/SmolLM2-135M'); ckpt.arch.numLayers // 30
 */
export function openCheckpoint(dir: string): Checkpoint {
  const config = readJson(path.join(dir, 'config.json'), true)!;
  const generationConfig = readJson(path.join(dir, 'generation_config.json'), false) ?? {};
  const files = wrapSafetensors(() => readShardedIndex(dir));
  const weights = new Map<string, WeightLocation>();
  for (const file of files) {
    const header = wrapSafetensors(() => readSafetensorsHeader(file));
    for (const entry of header.tensors.values()) weights.set(entry.name, { file, entry });
  }
  const arch = describeArchitecture(config, new Set(weights.keys()), path.join(dir, 'config.json'));
  if (generationConfig.eos_token_id !== undefined) {
    const ids = [generationConfig.eos_token_id].flat().filter((v: unknown): v is number => typeof v === 'number');
    arch.eosTokenIds = [...new Set([...arch.eosTokenIds, ...ids])];
  }
  for (const [name, shape] of expectedShapes(arch)) checkWeight(weights, name, shape, dir);
  return { dir, config, generationConfig, arch, weights, files };
}

function readJson(file: string, required: boolean): HfConfig | undefined {
  if (!fs.existsSync(file)) {
    if (required) throw new ModelLoadError(`${file}: not found (is this a Hugging Face model directory?)`);
    return undefined;
  }
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(`${file}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
}

function wrapSafetensors<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    throw new ModelLoadError((err as Error).message, { cause: err });
  }
}

function checkWeight(weights: Map<string, WeightLocation>, name: string, shape: number[], dir: string): void {
  const found = weights.get(name);
  if (!found) throw new ModelLoadError(`${dir}: missing weight '${name}' (expected shape [${shape}])`);
  const { entry, file } = found;
  if (!['F32', 'F16', 'BF16'].includes(entry.dtype)) {
    throw new ModelLoadError(`${file}: weight '${name}' has dtype ${entry.dtype}; supported: F32, F16, BF16`);
  }
  if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
    throw new ModelLoadError(`${file}: weight '${name}' has shape [${entry.shape}], expected [${shape}]`);
  }
}

/** Every weight the architecture reads, with its expected shape. */
export function expectedShapes(arch: ArchitectureSpec): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  const norm = (n: NormSpec, size: number) => {
    shapes.set(n.weight, [size]);
    if (n.bias) shapes.set(n.bias, [size]);
  };
  shapes.set(arch.embedTokens, [arch.vocabSize, arch.hiddenSize]);
  shapes.set(arch.lmHead, [arch.vocabSize, arch.hiddenSize]);
  if (arch.positions.kind === 'learned') shapes.set(arch.positions.weight, [arch.maxPositions, arch.hiddenSize]);
  norm(arch.finalNorm, arch.hiddenSize);
  arch.blocks.forEach((block) => {
    norm(block.inputNorm, arch.hiddenSize);
    norm(block.postAttentionNorm, arch.hiddenSize);
  });
  for (const projection of allProjections(arch).flat()) {
    const { inFeatures: i, outFeatures: o } = projection;
    shapes.set(projection.weight, projection.layout === 'out_in' ? [o, i] : [i, o]);
    if (projection.bias) shapes.set(projection.bias, [o]);
  }
  return shapes;
}

export { SafetensorsError };
