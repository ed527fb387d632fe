/**
 * The sizes `npm run pretrain` can train, as Llama configurations: tied embeddings (the vocabulary
 * is a large share of a small model), grouped-query attention with 32-wide heads, SwiGLU MLP,
 * RoPE. The tokenizer fixes the vocabulary; the shape fixes the rest.
 */

import type { ModelShape } from '../model/llama-config.js';

/** Named sizes, smallest first; `npm run pretrain -- --size NAME`. */
export const MODEL_SHAPES: Record<string, ModelShape> = {
  xs: { hidden: 128, intermediate: 384, layers: 4, heads: 4, kvHeads: 2, headDim: 32 },
  s: { hidden: 192, intermediate: 512, layers: 4, heads: 6, kvHeads: 2, headDim: 32 },
  m: { hidden: 256, intermediate: 640, layers: 4, heads: 8, kvHeads: 4, headDim: 32 },
};

/**
 * Parameters of a tied Llama of this shape (embedding counted once).
 *
 * @example parameterCount(MODEL_SHAPES.m!, 4096) // 3,803,392
 */
export function parameterCount(shape: ModelShape, vocab: number): number {
  const { hidden: h, intermediate: f, layers, heads, kvHeads, headDim: d } = shape;
  const attention = h * heads * d * 2 + h * kvHeads * d * 2;
  const perLayer = attention + 3 * h * f + 2 * h;
  return vocab * h + layers * perLayer + h;
}
