/**
 * Training P-tuning (`method: { type: 'p_tuning', p_tuning: { num_virtual_tokens,
 * encoder_reparameterization_type, encoder_hidden_size, encoder_num_layers, encoder_dropout } }`),
 * as PEFT's tuners/p_tuning defines it with its default (and recommended) MLP encoder: the
 * virtual tokens are PromptEncoder.forward(arange(n)) =
 *   mlp_head(embedding) = Linear(d, h) → ReLU → Linear(h, h) → ReLU → Linear(h, d)
 * over an Embedding(n, d) (d = token_dim = hidden size, h = encoder_hidden_size, d by default),
 * placed before every row as prompt tuning's are (PeftModelForCausalLM.forward). Training goes
 * through the MLP; save_pretrained writes its output as `prompt_embeddings` [n, d]
 * (get_prompt_embedding_to_save), which the `p_tuning` kind serves.
 *
 * Refused, each a 400 naming the option: the LSTM encoder (a bidirectional LSTM would need its own
 * differentiable ops), encoder_num_layers other than 2 (PEFT ignores it for the MLP, which always
 * has 3 layers, with a warning) and encoder_dropout other than 0 (PEFT uses it in the LSTM only):
 * options that would not change what is trained.
 * Initialisation (PromptEncoder.__init__): torch's defaults, Embedding N(0, 1) and Linear weight
 * and bias U(-1/sqrt(in), 1/sqrt(in)), seeded by the job's seed. Continuing from a stored P-tuning
 * delta trains its saved virtual tokens directly: the file holds the MLP's output, not the MLP.
 */
import { z } from 'zod';
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { TrainingHookContext } from '../../model/delta-hooks.js';
import type { TrainableParam } from '../../model/lower-training.js';
import { mulberry32, seededNormal } from '../../model/random.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind } from '../training.js';
import { prependVirtualTokens } from './prompt-tuning-training.js';
import { checkVirtualTokenCount, encodeVirtualTokens, linearRow, readVirtualTokens } from './virtual-token-training.js';
import { PROMPT_EMBEDDINGS } from './virtual-tokens.js';

/** `method.p_tuning`: PEFT's PromptEncoderConfig, with its names and defaults. */
export const PTuningTrainingOptions = z
  .object({
    num_virtual_tokens: z.number().int().positive().max(65536),
    encoder_reparameterization_type: z.enum(['MLP', 'LSTM']).default('MLP'),
    encoder_hidden_size: z.number().int().positive().max(65536).optional(),
    encoder_num_layers: z.number().int().positive().max(1024).default(2),
    encoder_dropout: z.number().min(0).max(1).default(0),
  })
  .strict();

export type PTuningTrainingOptions = z.infer<typeof PTuningTrainingOptions>;

/** Resolved P-tuning options (plain JSON: they cross to the engine thread and key the step graph). */
export interface PTuningLayout {
  numVirtualTokens: number;
  encoderHiddenSize: number;
  /** false when continuing from a stored delta: the saved virtual tokens are trained directly. */
  reparameterize: boolean;
}

/** PromptEncoder's parameters by PEFT's names (adapter name left out); mlp_head's Linear layers are 0, 2 and 4. */
export const P_TUNING_PARAMS = {
  embedding: 'prompt_encoder.embedding.weight',
  layers: [0, 2, 4].map((i) => ({ weight: `prompt_encoder.mlp_head.${i}.weight`, bias: `prompt_encoder.mlp_head.${i}.bias` })),
  saved: PROMPT_EMBEDDINGS,
} as const;

export const pTuningTraining: TrainableKind<PTuningTrainingOptions, PTuningLayout> = {
  name: 'p_tuning',
  deltaKind: 'p_tuning',
  graphVersion: 1,
  options: PTuningTrainingOptions,

  resolve(arch, o, limits): PTuningLayout {
    const n = o.num_virtual_tokens;
    checkVirtualTokenCount(n, limits);
    if (o.encoder_reparameterization_type === 'LSTM') throw new TrainingOptionsError('encoder_reparameterization_type', "'LSTM' is not trainable here; 'MLP' (PEFT's default) is");
    if (o.encoder_num_layers !== 2) throw new TrainingOptionsError('encoder_num_layers', `${o.encoder_num_layers}: PEFT's MLP encoder ignores it and always has 3 Linear layers, so only the default 2 is accepted`);
    if (o.encoder_dropout !== 0) throw new TrainingOptionsError('encoder_dropout', `${o.encoder_dropout}: PEFT applies it in the LSTM encoder only, so the MLP encoder accepts only 0`);
    return { numVirtualTokens: n, encoderHiddenSize: o.encoder_hidden_size ?? arch.hiddenSize, reparameterize: true };
  },

  params(arch, l): TrainableParam[] {
    const [n, d, h] = [l.numVirtualTokens, arch.hiddenSize, l.encoderHiddenSize];
    if (!l.reparameterize) return [{ name: P_TUNING_PARAMS.saved, shape: [n, d] }];
    const sizes: [number, number][] = [[d, h], [h, h], [h, d]];
    return [
      { name: P_TUNING_PARAMS.embedding, shape: [n, d] },
      ...P_TUNING_PARAMS.layers.flatMap(({ weight, bias }, i) => [{ name: weight, shape: [sizes[i]![1], sizes[i]![0]] }, { name: bias, shape: [sizes[i]![1]] }]),
    ];
  },

  init(arch, l, seed) {
    const normal = seededNormal(seed);
    const uniform = mulberry32(seed ^ 0x5bd1e995);
    return new Map(pTuningTraining.params(arch, l).map(({ name, shape }) => {
      const count = shape.reduce((a, b) => a * b, 1);
      if (name === P_TUNING_PARAMS.embedding || name === P_TUNING_PARAMS.saved) return [name, Float32Array.from({ length: count }, () => normal())];
      // A Linear's weight is [out, in] and its bias [out]: both bounded by 1/sqrt(in).
      const fanIn = name.startsWith('prompt_encoder.mlp_head.0.') ? arch.hiddenSize : l.encoderHiddenSize;
      return [name, Float32Array.from({ length: count }, () => (2 * uniform() - 1) / Math.sqrt(fanIn))];
    }));
  },

  virtualTokens: (l) => l.numVirtualTokens,

  fromDelta(files, arch) {
    const { config, n, tokens } = readVirtualTokens(files, 'P_TUNING', arch.hiddenSize);
    const hidden = config['encoder_hidden_size'];
    const options = { numVirtualTokens: n, encoderHiddenSize: typeof hidden === 'number' ? hidden : arch.hiddenSize, reparameterize: false };
    return { options, params: new Map([[P_TUNING_PARAMS.saved, tokens]]) };
  },

  hooks: (arch, l) => ({ kind: 'p_tuning', embeddings: (ctx, hidden) => prependVirtualTokens(ctx, hidden, virtualTokensOf(ctx, l), l.numVirtualTokens) }),

  write(arch, l, params, meta) {
    const data = l.reparameterize ? mlpHead(arch, l, params) : params.get(P_TUNING_PARAMS.saved)!;
    return { config: pTuningConfigText(arch, l, meta.baseModel), weights: encodeVirtualTokens(l.numVirtualTokens, arch.hiddenSize, data) };
  },
};

/** The virtual tokens [n, d] in the step graph: mlp_head(embedding), or the saved tokens themselves. */
function virtualTokensOf(ctx: TrainingHookContext, l: PTuningLayout): string {
  if (!l.reparameterize) return ctx.param(P_TUNING_PARAMS.saved);
  const { g } = ctx;
  let x = ctx.param(P_TUNING_PARAMS.embedding); // [n, d]
  P_TUNING_PARAMS.layers.forEach(({ weight, bias }, i) => {
    x = g.apply('Gemm', [x, ctx.param(weight), ctx.param(bias)], { transB: 1 }); // [n, h] (the last: [n, d])
    if (i < 2) x = g.apply('Relu', [x]);
  });
  return x;
}

/** PromptEncoder.forward(arange(n)) as get_prompt_embedding_to_save runs it, accumulated in float64, stored as float32. */
function mlpHead(arch: ArchitectureSpec, l: PTuningLayout, params: ReadonlyMap<string, Float32Array>): Float32Array {
  const [n, d] = [l.numVirtualTokens, arch.hiddenSize];
  const relu = (v: number) => Math.max(v, 0);
  const out = new Float32Array(n * d);
  for (let p = 0; p < n; p++) {
    let x: Float32Array = params.get(P_TUNING_PARAMS.embedding)!.slice(p * d, (p + 1) * d);
    P_TUNING_PARAMS.layers.forEach(({ weight, bias }, i) => {
      x = linearRow(x, params.get(weight)!, params.get(bias)!, i < 2 ? relu : undefined);
    });
    out.set(x, p * d);
  }
  return out;
}

/** adapter_config.json as save_pretrained writes a PromptEncoderConfig for a causal LM (sorted keys, inference_mode true). */
function pTuningConfigText(arch: ArchitectureSpec, l: PTuningLayout, baseModel: string): string {
  const config = {
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    encoder_dropout: 0.0,
    encoder_hidden_size: l.encoderHiddenSize,
    encoder_num_layers: 2,
    encoder_reparameterization_type: 'MLP',
    inference_mode: true,
    modules_to_save: null,
    num_attention_heads: arch.numHeads,
    num_layers: arch.numLayers,
    num_transformer_submodules: 1,
    num_virtual_tokens: l.numVirtualTokens,
    peft_type: 'P_TUNING',
    revision: null,
    task_type: 'CAUSAL_LM',
    token_dim: arch.hiddenSize,
  };
  return JSON.stringify(config, null, 2);
}

registerTrainableKind(pTuningTraining);
