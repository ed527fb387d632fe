import type { ArchitectureSpec, BlockSpec, NamedModule, NormSpec, ProjectionSpec } from '../architecture.js';
import { ropeInverseFrequencies } from '../rope.js';
import { registerFamily, requireInt, tokenIds, type HfConfig } from './registry.js';

/**
 * Llama-style decoders: RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP.
 * Llama 2/3, Mistral, SmolLM and TinyLlama are `llama`/`mistral`; Qwen2 adds q/k/v biases.
 */
function describeLlama(config: HfConfig, tensorNames: ReadonlySet<string>): ArchitectureSpec {
  const hidden = requireInt(config, 'hidden_size');
  const heads = requireInt(config, 'num_attention_heads');
  const kvHeads = config.num_key_value_heads ?? heads;
  const headDim = config.head_dim ?? hidden / heads;
  const intermediate = requireInt(config, 'intermediate_size');
  const layers = requireInt(config, 'num_hidden_layers');
  const qkvBias = config.model_type === 'qwen2' ? true : Boolean(config.attention_bias);
  const oBias = config.model_type === 'qwen2' ? false : Boolean(config.attention_bias);
  const mlpBias = Boolean(config.mlp_bias);
  const eps = config.rms_norm_eps ?? 1e-6;
  const rope = config.rope_parameters ?? { rope_theta: config.rope_theta ?? 10000, ...(config.rope_scaling ?? {}) };

  const norm = (weight: string): NormSpec => ({ kind: 'rms', weight, eps });
  const linear = (path: string, name: string, inFeatures: number, outFeatures: number, bias: boolean): ProjectionSpec => ({
    name,
    modulePath: path,
    inFeatures,
    outFeatures,
    weight: `${path}.weight`,
    bias: bias ? `${path}.bias` : undefined,
    layout: 'out_in',
  });
  const blocks: BlockSpec[] = Array.from({ length: layers }, (_, i) => {
    const p = `model.layers.${i}`;
    return {
      inputNorm: norm(`${p}.input_layernorm.weight`),
      postAttentionNorm: norm(`${p}.post_attention_layernorm.weight`),
      attention: {
        q: linear(`${p}.self_attn.q_proj`, 'q_proj', hidden, heads * headDim, qkvBias),
        k: linear(`${p}.self_attn.k_proj`, 'k_proj', hidden, kvHeads * headDim, qkvBias),
        v: linear(`${p}.self_attn.v_proj`, 'v_proj', hidden, kvHeads * headDim, qkvBias),
      },
      o: linear(`${p}.self_attn.o_proj`, 'o_proj', heads * headDim, hidden, oBias),
      mlp: {
        kind: 'gated-silu',
        gate: linear(`${p}.mlp.gate_proj`, 'gate_proj', hidden, intermediate, mlpBias),
        up: linear(`${p}.mlp.up_proj`, 'up_proj', hidden, intermediate, mlpBias),
        down: linear(`${p}.mlp.down_proj`, 'down_proj', intermediate, hidden, mlpBias),
      },
    };
  });
  // An explicit `tie_word_embeddings: false` needs lm_head.weight (a missing one is a load error,
  // not a silent tie); only when the config does not say do we infer tying from the tensors.
  const tied = config.tie_word_embeddings === true || (config.tie_word_embeddings === undefined && !tensorNames.has('lm_head.weight'));
  const modules: NamedModule[] = [
    { path: 'model', kind: 'container' },
    { path: 'model.embed_tokens', kind: 'embedding' },
    { path: 'model.layers', kind: 'container' },
    ...blocks.flatMap((block, i): NamedModule[] => {
      const p = `model.layers.${i}`;
      const attention = block.attention as { q: ProjectionSpec; k: ProjectionSpec; v: ProjectionSpec };
      const mlp = block.mlp as { gate: ProjectionSpec; up: ProjectionSpec; down: ProjectionSpec };
      return [
        { path: p, kind: 'container' },
        { path: `${p}.self_attn`, kind: 'container' },
        ...[attention.q, attention.k, attention.v, block.o].map((l): NamedModule => ({ path: l.modulePath, kind: 'linear' })),
        { path: `${p}.mlp`, kind: 'container' },
        ...[mlp.gate, mlp.up, mlp.down].map((l): NamedModule => ({ path: l.modulePath, kind: 'linear' })),
        { path: `${p}.mlp.act_fn`, kind: 'activation' },
        { path: `${p}.input_layernorm`, kind: 'norm' },
        { path: `${p}.post_attention_layernorm`, kind: 'norm' },
      ];
    }),
    { path: 'model.norm', kind: 'norm' },
    { path: 'model.rotary_emb', kind: 'rotary' },
    { path: 'lm_head', kind: 'head' },
  ];
  return {
    family: config.model_type,
    modules,
    hiddenSize: hidden,
    numLayers: layers,
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    vocabSize: requireInt(config, 'vocab_size'),
    maxPositions: config.max_position_embeddings ?? 4096,
    embedTokens: 'model.embed_tokens.weight',
    positions: { kind: 'rope', invFreq: ropeInverseFrequencies(headDim, rope), attentionScaling: 1 },
    blocks,
    finalNorm: norm('model.norm.weight'),
    lmHead: tied ? 'model.embed_tokens.weight' : 'lm_head.weight',
    eosTokenIds: tokenIds(config.eos_token_id),
    bosTokenId: typeof config.bos_token_id === 'number' ? config.bos_token_id : undefined,
  };
}

registerFamily(['llama', 'mistral', 'qwen2'], describeLlama);
