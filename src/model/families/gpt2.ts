import type { ArchitectureSpec, BlockSpec, NamedModule, NormSpec, ProjectionSpec } from '../architecture.js';
import { ModelLoadError } from '../errors.js';
import { registerFamily, requireInt, tokenIds, type HfConfig } from './registry.js';

/**
 * GPT-2: learned positions, LayerNorm, fused c_attn, gelu (tanh approximation), Conv1D weights
 * stored [in, out]. Checkpoints name tensors with or without the `transformer.` prefix.
 */
function describeGpt2(config: HfConfig, tensorNames: ReadonlySet<string>): ArchitectureSpec {
  const hidden = requireInt(config, 'n_embd');
  const heads = requireInt(config, 'n_head');
  const layers = requireInt(config, 'n_layer');
  const inner = config.n_inner ?? 4 * hidden;
  const eps = config.layer_norm_epsilon ?? 1e-5;
  const activation = config.activation_function ?? 'gelu_new';
  if (!['gelu_new', 'gelu_pytorch_tanh', 'gelu_fast'].includes(activation)) {
    throw new ModelLoadError(`config.json: activation_function '${activation}' is not supported for gpt2 (supported: gelu_new)`);
  }
  const prefix = tensorNames.has('wte.weight') && !tensorNames.has('transformer.wte.weight') ? '' : 'transformer.';
  // PEFT addresses modules through the model object, which always has the `transformer.` prefix.
  const norm = (path: string): NormSpec => ({ kind: 'layer', weight: `${prefix}${path}.weight`, bias: `${prefix}${path}.bias`, eps });
  const conv = (path: string, name: string, inFeatures: number, outFeatures: number): ProjectionSpec => ({
    name,
    modulePath: `transformer.${path}`,
    inFeatures,
    outFeatures,
    weight: `${prefix}${path}.weight`,
    bias: `${prefix}${path}.bias`,
    layout: 'in_out',
  });
  const blocks: BlockSpec[] = Array.from({ length: layers }, (_, i) => {
    const p = `h.${i}`;
    return {
      inputNorm: norm(`${p}.ln_1`),
      postAttentionNorm: norm(`${p}.ln_2`),
      attention: { qkv: conv(`${p}.attn.c_attn`, 'c_attn', hidden, 3 * hidden) },
      o: conv(`${p}.attn.c_proj`, 'c_proj', hidden, hidden),
      mlp: { kind: 'gelu-tanh', fc: conv(`${p}.mlp.c_fc`, 'c_fc', hidden, inner), proj: conv(`${p}.mlp.c_proj`, 'c_proj', inner, hidden) },
    };
  });
  // PEFT addresses modules through the model object, always under `transformer.`.
  const modules: NamedModule[] = [
    { path: 'transformer', kind: 'container' },
    { path: 'transformer.wte', kind: 'embedding' },
    { path: 'transformer.wpe', kind: 'embedding' },
    { path: 'transformer.drop', kind: 'dropout' },
    { path: 'transformer.h', kind: 'container' },
    ...blocks.flatMap((block, i): NamedModule[] => {
      const p = `transformer.h.${i}`;
      const mlp = block.mlp as { fc: ProjectionSpec; proj: ProjectionSpec };
      return [
        { path: p, kind: 'container' },
        { path: `${p}.ln_1`, kind: 'norm' },
        { path: `${p}.attn`, kind: 'container' },
        { path: (block.attention as { qkv: ProjectionSpec }).qkv.modulePath, kind: 'linear' },
        { path: block.o.modulePath, kind: 'linear' },
        { path: `${p}.attn.attn_dropout`, kind: 'dropout' },
        { path: `${p}.attn.resid_dropout`, kind: 'dropout' },
        { path: `${p}.ln_2`, kind: 'norm' },
        { path: `${p}.mlp`, kind: 'container' },
        { path: mlp.fc.modulePath, kind: 'linear' },
        { path: mlp.proj.modulePath, kind: 'linear' },
        { path: `${p}.mlp.act`, kind: 'activation' },
        { path: `${p}.mlp.dropout`, kind: 'dropout' },
      ];
    }),
    { path: 'transformer.ln_f', kind: 'norm' },
    { path: 'lm_head', kind: 'head' },
  ];
  return {
    family: 'gpt2',
    modules,
    hiddenSize: hidden,
    numLayers: layers,
    numHeads: heads,
    numKvHeads: heads,
    headDim: hidden / heads,
    vocabSize: requireInt(config, 'vocab_size'),
    maxPositions: config.n_positions ?? 1024,
    embedTokens: `${prefix}wte.weight`,
    positions: { kind: 'learned', weight: `${prefix}wpe.weight` },
    blocks,
    finalNorm: norm('ln_f'),
    lmHead: tensorNames.has('lm_head.weight') ? 'lm_head.weight' : `${prefix}wte.weight`,
    eosTokenIds: tokenIds(config.eos_token_id),
    bosTokenId: typeof config.bos_token_id === 'number' ? config.bos_token_id : undefined,
  };
}

registerFamily(['gpt2'], describeGpt2);
