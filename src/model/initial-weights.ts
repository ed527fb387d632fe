/**
 * A freshly initialised model's weights, drawn as transformers' `_init_weights` draws them for
 * Llama, Qwen2 and GPT-2: every linear weight and embedding from N(0, initializer_range²), biases
 * zero, norm weights one and norm biases zero; GPT-2 also scales its two residual output
 * projections (`c_proj`) by 1/√(2·layers), as GPT2PreTrainedModel does. Each tensor draws from its
 * own stream (seed ^ hash of its name), so the values do not depend on the order tensors are made in.
 */
import type { ArchitectureSpec } from './architecture.js';
import { hashSeed, seededNormal } from './random.js';

/** transformers' default `initializer_range` for all three families. */
export const INITIALIZER_RANGE = 0.02;

/** What a tensor is, which decides how it starts. */
export type InitRole = 'matrix' | 'bias' | 'norm_weight' | 'norm_bias';

/**
 * One tensor's starting values.
 *
 * @example initialTensor('model.norm.weight', [4], 'norm_weight', 1, 0.02) // Float32Array [1, 1, 1, 1]
 */
export function initialTensor(name: string, shape: readonly number[], role: InitRole, seed: number, std: number): Float32Array {
  const size = shape.reduce((a, b) => a * b, 1);
  if (role === 'norm_weight') return new Float32Array(size).fill(1);
  if (role !== 'matrix') return new Float32Array(size);
  const normal = seededNormal((seed ^ hashSeed(name)) >>> 0);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = std * normal();
  return data;
}

/**
 * The standard deviation a matrix of this architecture starts with.
 *
 * @example initialStd(gpt2Arch, 'h.0.attn.c_proj.weight') // 0.02 / Math.sqrt(2 * gpt2Arch.numLayers)
 */
export function initialStd(arch: ArchitectureSpec, name: string): number {
  return arch.family === 'gpt2' && name.endsWith('c_proj.weight') ? INITIALIZER_RANGE / Math.sqrt(2 * arch.numLayers) : INITIALIZER_RANGE;
}
