/**
 * Training prefix tuning (`method: { type: 'prefix_tuning', prefix_tuning: { num_virtual_tokens,
 * prefix_projection, encoder_hidden_size, init_weights } }`), as PEFT's tuners/prefix_tuning
 * defines it. With T = token_dim (kvHeads · headDim: _prepare_prompt_learning_config sizes the
 * prefix by num_key_value_heads on grouped-query models) and L layers, PrefixEncoder is
 *   without prefix_projection   Embedding(n, L·2·T)                       the prefix itself
 *   with prefix_projection      Embedding(n, T) → Linear(T, E) → Tanh → Linear(E, L·2·T)
 * and PeftModel.get_prompt views its output [n, L·2, kvHeads, headDim]: layer l's keys are
 * columns [2l·T, (2l+1)·T), its values the next T (serving's prefix-tuning.ts reads the same
 * layout). Training goes through the projection; what save_pretrained writes is the encoder's
 * output, `prompt_embeddings` [n, L·2·T] (BasePromptEncoder._get_adapter_state_dict →
 * get_prompt_embedding_to_save), which an inference-mode model loads as its Embedding.
 *
 * Initialisation (PrefixEncoder.__init__): torch's defaults — Embedding N(0, 1), Linear weight
 * and bias U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with a = sqrt(5)) — seeded by the job's
 * seed; init_weights 'zero' zeroes the last Linear (with projection) or the embedding (without).
 * Continuing from a stored prefix trains the saved prefix itself (prefix_projection false): PEFT's
 * PrefixEncoder.load_prompt_embeddings cannot invert a projection either.
 */
import { z } from 'zod';
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { TrainingHookContext, TrainingHooks } from '../../model/delta-hooks.js';
import type { TrainableParam } from '../../model/lower-training.js';
import { mulberry32, seededNormal } from '../../model/random.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind } from '../training.js';
import { PROMPT_EMBEDDINGS } from './prefix-tuning.js';
import { checkVirtualTokenCount, encodeVirtualTokens, linearRow, readVirtualTokens } from './virtual-token-training.js';

/** `method.prefix_tuning`: PEFT's PrefixTuningConfig (num_virtual_tokens has no default there either). */
export const PrefixTuningTrainingOptions = z
  .object({
    num_virtual_tokens: z.number().int().positive().max(65536),
    prefix_projection: z.boolean().default(false),
    encoder_hidden_size: z.number().int().positive().max(65536).optional(),
    init_weights: z.literal('zero').nullable().default(null),
  })
  .strict();

export type PrefixTuningTrainingOptions = z.infer<typeof PrefixTuningTrainingOptions>;

/** Resolved prefix-tuning options (plain JSON: they cross to the engine thread and key the step graph). */
export interface PrefixTuningLayout {
  numVirtualTokens: number;
  prefixProjection: boolean;
  /** PEFT's encoder_hidden_size, token_dim when not given (as _prepare_prompt_learning_config fills it). */
  encoderHiddenSize: number;
  initWeights: 'zero' | null;
}

/** PrefixEncoder's parameters by PEFT's names (the adapter name left out, as in its saved keys). */
export const PREFIX_PARAMS = {
  /** Without projection the embedding is the prefix, and is what is saved. */
  prefix: PROMPT_EMBEDDINGS,
  embedding: 'prompt_encoder.embedding.weight',
  w1: 'prompt_encoder.transform.0.weight',
  b1: 'prompt_encoder.transform.0.bias',
  w2: 'prompt_encoder.transform.2.weight',
  b2: 'prompt_encoder.transform.2.bias',
} as const;

/**
 * PEFT's token_dim for prefix tuning: one position's key (or value) width, kvHeads · headDim.
 *
 * @example prefixTokenDim(llamaArch) // 2 * 16 with 2 key/value heads of 16
 */
export const prefixTokenDim = (arch: ArchitectureSpec) => arch.numKvHeads * arch.headDim;

export const prefixTuningTraining: TrainableKind<PrefixTuningTrainingOptions, PrefixTuningLayout> = {
  name: 'prefix_tuning',
  deltaKind: 'prefix_tuning',
  graphVersion: 1,
  options: PrefixTuningTrainingOptions,

  resolve(arch, o, limits): PrefixTuningLayout {
    const n = o.num_virtual_tokens;
    checkVirtualTokenCount(n, limits);
    if (o.encoder_hidden_size !== undefined && !o.prefix_projection) throw new TrainingOptionsError('encoder_hidden_size', 'applies only with prefix_projection true (it is the projection MLP\'s hidden size)');
    return { numVirtualTokens: n, prefixProjection: o.prefix_projection, encoderHiddenSize: o.encoder_hidden_size ?? prefixTokenDim(arch), initWeights: o.init_weights };
  },

  params(arch, l): TrainableParam[] {
    const [n, T, E] = [l.numVirtualTokens, prefixTokenDim(arch), l.encoderHiddenSize];
    const width = arch.numLayers * 2 * T;
    if (!l.prefixProjection) return [{ name: PREFIX_PARAMS.prefix, shape: [n, width] }];
    return [
      { name: PREFIX_PARAMS.embedding, shape: [n, T] },
      { name: PREFIX_PARAMS.w1, shape: [E, T] },
      { name: PREFIX_PARAMS.b1, shape: [E] },
      { name: PREFIX_PARAMS.w2, shape: [width, E] },
      { name: PREFIX_PARAMS.b2, shape: [width] },
    ];
  },

  init(arch, l, seed) {
    const normal = seededNormal(seed);
    const uniform = mulberry32(seed ^ 0x5bd1e995);
    const params = new Map<string, Float32Array>();
    for (const { name, shape } of prefixTuningTraining.params(arch, l)) {
      const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
      const fanIn = name === PREFIX_PARAMS.w1 || name === PREFIX_PARAMS.b1 ? prefixTokenDim(arch) : l.encoderHiddenSize;
      const zeroed = l.initWeights === 'zero' && (name === PREFIX_PARAMS.prefix || name === PREFIX_PARAMS.w2 || name === PREFIX_PARAMS.b2);
      const embedding = name === PREFIX_PARAMS.prefix || name === PREFIX_PARAMS.embedding;
      if (!zeroed) for (let i = 0; i < values.length; i++) values[i] = embedding ? normal() : (2 * uniform() - 1) / Math.sqrt(fanIn);
      params.set(name, values);
    }
    return params;
  },

  virtualTokens: (l) => l.numVirtualTokens,

  fromDelta(files, arch) {
    const { config, n, tokens } = readVirtualTokens(files, 'PREFIX_TUNING', arch.numLayers * 2 * prefixTokenDim(arch));
    const hidden = config['encoder_hidden_size'];
    const options: PrefixTuningLayout = { numVirtualTokens: n, prefixProjection: false, encoderHiddenSize: typeof hidden === 'number' ? hidden : prefixTokenDim(arch), initWeights: config['init_weights'] === 'zero' ? 'zero' : null };
    return { options, params: new Map([[PREFIX_PARAMS.prefix, tokens]]) };
  },

  hooks: (arch, l) => prefixTuningHooks(arch, l),

  write(arch, l, params, meta) {
    const width = arch.numLayers * 2 * prefixTokenDim(arch);
    const data = l.prefixProjection ? projectedPrefix(arch, l, params) : params.get(PREFIX_PARAMS.prefix)!;
    return { config: prefixConfigText(arch, l, meta.baseModel), weights: encodeVirtualTokens(l.numVirtualTokens, width, data) };
  },
};

/** The prefix [n, L·2·T] in the step graph: the embedding, or transform(embedding) with projection. */
function prefixValue(ctx: TrainingHookContext, l: PrefixTuningLayout): string {
  if (!l.prefixProjection) return ctx.param(PREFIX_PARAMS.prefix);
  const { g } = ctx;
  const hidden = g.apply('Tanh', [g.apply('Gemm', [ctx.param(PREFIX_PARAMS.embedding), ctx.param(PREFIX_PARAMS.w1), ctx.param(PREFIX_PARAMS.b1)], { transB: 1 })]); // [n, E]
  return g.apply('Gemm', [hidden, ctx.param(PREFIX_PARAMS.w2), ctx.param(PREFIX_PARAMS.b2)], { transB: 1 }); // [n, L·2·T]
}

/** get_prompt's split: layer l's keys are columns [2l·T, (2l+1)·T) of the prefix, its values the next T. */
function prefixTuningHooks(arch: ArchitectureSpec, l: PrefixTuningLayout): TrainingHooks {
  const T = prefixTokenDim(arch);
  const columns = (ctx: TrainingHookContext, j: number) => {
    const { g } = ctx;
    const prefix = ctx.shared('prefix_tuning.prefix', () => prefixValue(ctx, l));
    return g.apply('Slice', [prefix, g.ints([j * T]), g.ints([(j + 1) * T]), g.ints([1])]); // [n, T]
  };
  return {
    kind: 'prefix_tuning',
    attentionPrefix: { length: l.numVirtualTokens, keyValues: (ctx, layer) => ({ key: columns(ctx, 2 * layer), value: columns(ctx, 2 * layer + 1) }) },
  };
}

/**
 * PrefixEncoder.forward(arange(n)) with projection, as get_prompt_embedding_to_save computes it
 * for save_pretrained: Linear → Tanh → Linear, each output accumulated in float64 and stored as float32.
 */
function projectedPrefix(arch: ArchitectureSpec, l: PrefixTuningLayout, params: ReadonlyMap<string, Float32Array>): Float32Array {
  const [n, T] = [l.numVirtualTokens, prefixTokenDim(arch)];
  const width = arch.numLayers * 2 * T;
  const [embedding, w1, b1, w2, b2] = [PREFIX_PARAMS.embedding, PREFIX_PARAMS.w1, PREFIX_PARAMS.b1, PREFIX_PARAMS.w2, PREFIX_PARAMS.b2].map((name) => params.get(name)!) as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array];
  const out = new Float32Array(n * width);
  for (let p = 0; p < n; p++) {
    const hidden = linearRow(embedding.subarray(p * T, (p + 1) * T), w1, b1, Math.tanh);
    out.set(linearRow(hidden, w2, b2), p * width);
  }
  return out;
}

/**
 * adapter_config.json as save_pretrained writes a PrefixTuningConfig for a causal LM (sorted keys,
 * inference_mode true), with _prepare_prompt_learning_config's values: num_layers, token_dim and
 * num_attention_heads from the key/value heads, encoder_hidden_size defaulting to token_dim.
 */
function prefixConfigText(arch: ArchitectureSpec, l: PrefixTuningLayout, baseModel: string): string {
  const config = {
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    encoder_hidden_size: l.encoderHiddenSize,
    inference_mode: true,
    init_weights: l.initWeights,
    modules_to_save: null,
    num_attention_heads: arch.numKvHeads,
    num_layers: arch.numLayers,
    num_transformer_submodules: 1,
    num_virtual_tokens: l.numVirtualTokens,
    peft_type: 'PREFIX_TUNING',
    prefix_projection: l.prefixProjection,
    revision: null,
    task_type: 'CAUSAL_LM',
    token_dim: prefixTokenDim(arch),
  };
  return JSON.stringify(config, null, 2);
}

registerTrainableKind(prefixTuningTraining);
