/**
 * A Llama checkpoint's config.json and generation_config.json for a shape: tied embeddings,
 * SwiGLU MLP, RoPE, RMSNorm, the special-token roles of src/pretrain/tokenizer-files.ts. The
 * synthetic test model and the pretrained default are both written from here.
 */
import { INITIALIZER_RANGE } from './initial-weights.js';

export interface ModelShape {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** Ids the model's config names (the tokenizer's special tokens). */
export interface SpecialIds {
  endOfText: number;
  imEnd: number;
}

/**
 * config.json of a LlamaForCausalLM with this shape, in float32 (the trainer's dtype; the
 * committed model rewrites `dtype` when it stores F16).
 *
 * @example llamaConfig({ hidden: 128, intermediate: 384, layers: 4, heads: 4, kvHeads: 2, headDim: 32 }, 4096, { endOfText: 256, imEnd: 258 }, 1024).num_hidden_layers // 4
 */
export function llamaConfig(shape: ModelShape, vocab: number, ids: SpecialIds, maxPositions: number): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: ids.endOfText,
    dtype: 'float32',
    eos_token_id: ids.imEnd,
    head_dim: shape.headDim,
    hidden_act: 'silu',
    hidden_size: shape.hidden,
    initializer_range: INITIALIZER_RANGE,
    intermediate_size: shape.intermediate,
    max_position_embeddings: maxPositions,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: shape.heads,
    num_hidden_layers: shape.layers,
    num_key_value_heads: shape.kvHeads,
    pad_token_id: ids.endOfText,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_parameters: { rope_theta: 10000, rope_type: 'default' },
    // transformers 4.x reads rope_theta at the top level; 5.x reads rope_parameters.
    rope_theta: 10000,
    tie_word_embeddings: true,
    use_cache: true,
    vocab_size: vocab,
  };
}

/** generation_config.json: chat turns end with <|im_end|>; <|endoftext|> also stops plain completion. */
export function generationConfig(ids: SpecialIds): Record<string, unknown> {
  return { bos_token_id: ids.endOfText, eos_token_id: [ids.imEnd, ids.endOfText], pad_token_id: ids.endOfText };
}
