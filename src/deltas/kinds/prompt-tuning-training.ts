/**
 * Training prompt tuning (`method: { type: 'prompt_tuning', prompt_tuning: { num_virtual_tokens,
 * init, init_text } }`), as PEFT's tuners/prompt_tuning defines it: n learned embeddings
 * (PromptEmbedding's `nn.Embedding(num_virtual_tokens, token_dim)`) concatenated before every
 * row's token embeddings by PeftModelForCausalLM.forward, so the row's own tokens take positions
 * n, n + 1, ... and the loss is on them alone (PEFT labels the virtual positions -100).
 *
 * Initialisation (PromptEmbedding.__init__, PEFT's `prompt_tuning_init`):
 *   random        nn.Embedding's own reset_parameters: N(0, 1), seeded by the job's seed
 *   text          `tokenizer(init_text)["input_ids"]` (special tokens included, as the tokenizer's
 *                 __call__ adds them), cut to n or repeated ceil(n / len) times and cut, then the
 *                 backbone's word embeddings of those ids
 *   sample_vocab  ids drawn uniformly from the vocabulary (torch.randint), their word embeddings
 * The result is what save_pretrained writes: adapter_config.json (PromptTuningConfig's fields,
 * inference_mode true) and `prompt_embeddings` [n, hidden] (BasePromptEncoder._get_adapter_state_dict),
 * served by the `prompt_tuning` kind.
 */
import { z } from 'zod';
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { TrainingHookContext, TrainingHooks } from '../../model/delta-hooks.js';
import { mulberry32, seededNormal } from '../../model/random.js';
import { parseSafetensors } from '../../model/safetensors.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind, type TrainingBackbone } from '../training.js';
import { checkVirtualTokenCount, encodeVirtualTokens } from './virtual-token-training.js';
import { PROMPT_EMBEDDINGS } from './virtual-tokens.js';

/** `method.prompt_tuning`: PEFT's PromptTuningConfig, with the names for prompt_tuning_init(_text). */
export const PromptTuningTrainingOptions = z
  .object({
    num_virtual_tokens: z.number().int().positive().max(65536),
    init: z.enum(['random', 'text', 'sample_vocab']).default('random'),
    init_text: z.string().min(1).max(65536).optional(),
  })
  .strict();

export type PromptTuningTrainingOptions = z.infer<typeof PromptTuningTrainingOptions>;

/** PEFT's PromptTuningInit values, as adapter_config.json spells them. */
type PeftInit = 'RANDOM' | 'TEXT' | 'SAMPLE_VOCAB';

/** Resolved prompt-tuning options (plain JSON: they cross to the engine thread and key the step graph). */
export interface PromptTuningLayout {
  numVirtualTokens: number;
  init: PeftInit;
  /** prompt_tuning_init_text, written back to adapter_config.json (null unless TEXT). */
  initText: string | null;
  /** tokenizer_name_or_path of a delta training continues from (default: the job's base model). */
  tokenizerName?: string | null;
}

/** The one trainable tensor: PromptEmbedding's weight, saved under this name. */
export const PROMPT_TUNING_PARAM = PROMPT_EMBEDDINGS;

const PEFT_INIT: Record<PromptTuningTrainingOptions['init'], PeftInit> = { random: 'RANDOM', text: 'TEXT', sample_vocab: 'SAMPLE_VOCAB' };

/**
 * PromptEmbedding's TEXT initialisation ids: the text's ids cut to n, or repeated until there are
 * at least n and then cut (peft/tuners/prompt_tuning/model.py).
 *
 * @example textInitIds([5, 6, 7], 7) // [5, 6, 7, 5, 6, 7, 5]
 */
export function textInitIds(ids: readonly number[], n: number): number[] {
  if (ids.length === 0) throw new RangeError('the init text has no tokens');
  const repeated = ids.length < n ? Array.from({ length: Math.ceil(n / ids.length) }, () => ids).flat() : [...ids];
  return repeated.slice(0, n);
}

export const promptTuningTraining: TrainableKind<PromptTuningTrainingOptions, PromptTuningLayout> = {
  name: 'prompt_tuning',
  deltaKind: 'prompt_tuning',
  graphVersion: 1,
  options: PromptTuningTrainingOptions,

  resolve(arch, o, limits, backbone): PromptTuningLayout {
    const n = o.num_virtual_tokens;
    checkVirtualTokenCount(n, limits);
    if (o.init === 'text') {
      if (o.init_text === undefined) throw new TrainingOptionsError('init_text', "is required with init 'text' (PEFT's PromptTuningConfig refuses TEXT without prompt_tuning_init_text)");
      if (!backbone?.tokenizer) throw new TrainingOptionsError('init', "'text' needs the model's tokenizer, and this model directory has none");
      if (backbone.tokenizer.encode(o.init_text).length === 0) throw new TrainingOptionsError('init_text', 'has no tokens for the model\'s tokenizer');
    } else if (o.init_text !== undefined) {
      throw new TrainingOptionsError('init_text', `applies only with init 'text', not '${o.init}'`);
    }
    return { numVirtualTokens: n, init: PEFT_INIT[o.init], initText: o.init === 'text' ? o.init_text! : null };
  },

  params: (arch, l) => [{ name: PROMPT_TUNING_PARAM, shape: [l.numVirtualTokens, arch.hiddenSize] }],

  init(arch, l, seed, backbone) {
    const n = l.numVirtualTokens;
    if (l.init === 'RANDOM') {
      const normal = seededNormal(seed);
      return new Map([[PROMPT_TUNING_PARAM, Float32Array.from({ length: n * arch.hiddenSize }, () => normal())]]);
    }
    if (!backbone) throw new Error(`prompt tuning's ${l.init} initialisation reads the backbone's word embeddings, and none was given`);
    return new Map([[PROMPT_TUNING_PARAM, backbone.weightRows(arch.embedTokens, initIds(arch, l, seed, backbone))]]);
  },

  virtualTokens: (l) => l.numVirtualTokens,

  fromDelta(files, arch) {
    const config = JSON.parse(files.config) as Record<string, unknown>;
    if (config['peft_type'] !== 'PROMPT_TUNING') throw new Error(`a prompt_tuning job continues from a PROMPT_TUNING delta, not ${String(config['peft_type'])}`);
    const weights = parseSafetensors(files.weights, 'adapter_model.safetensors');
    const n = weights.header.tensors.get(PROMPT_EMBEDDINGS)?.shape[0];
    if (n === undefined) throw new Error(`the delta has no ${PROMPT_EMBEDDINGS}`);
    const init = (['RANDOM', 'TEXT', 'SAMPLE_VOCAB'] as const).find((v) => v === config['prompt_tuning_init']) ?? 'RANDOM';
    const initText = typeof config['prompt_tuning_init_text'] === 'string' ? config['prompt_tuning_init_text'] : null;
    const tokenizerName = typeof config['tokenizer_name_or_path'] === 'string' ? config['tokenizer_name_or_path'] : null;
    const params = new Map([[PROMPT_TUNING_PARAM, Float32Array.from(weights.view(PROMPT_EMBEDDINGS))]]);
    if (params.get(PROMPT_TUNING_PARAM)!.length !== n * arch.hiddenSize) throw new Error(`${PROMPT_EMBEDDINGS} is not [${n}, ${arch.hiddenSize}]`);
    return { options: { numVirtualTokens: n, init, initText, tokenizerName }, params };
  },

  hooks: (arch, l) => promptTuningHooks(arch, l),

  write(arch, l, params, meta) {
    return { config: promptTuningConfigText(arch, l, meta.baseModel), weights: encodeVirtualTokens(l.numVirtualTokens, arch.hiddenSize, params.get(PROMPT_TUNING_PARAM)!) };
  },
};

/** The TEXT or SAMPLE_VOCAB ids whose word embeddings start the prompt. */
function initIds(arch: ArchitectureSpec, l: PromptTuningLayout, seed: number, backbone: TrainingBackbone): number[] {
  if (l.init === 'SAMPLE_VOCAB') {
    const uniform = mulberry32(seed);
    return Array.from({ length: l.numVirtualTokens }, () => Math.floor(uniform() * arch.vocabSize));
  }
  if (!backbone.tokenizer || l.initText === null) throw new Error("prompt tuning's TEXT initialisation needs the tokenizer and init_text");
  return textInitIds(backbone.tokenizer.encode(l.initText), l.numVirtualTokens);
}

/**
 * PeftModelForCausalLM's forward: cat(prompts, inputs_embeds) along the sequence, the same n
 * embeddings before every row; the training backend then runs the blocks on n + seqLen tokens
 * per row and the LM head on each row's last seqLen.
 */
function promptTuningHooks(arch: ArchitectureSpec, l: PromptTuningLayout): TrainingHooks {
  return { kind: 'prompt_tuning', embeddings: (ctx, hidden) => prependVirtualTokens(ctx, hidden, ctx.param(PROMPT_TUNING_PARAM), l.numVirtualTokens) };
}

/**
 * `virtual` [n, H] before each row's token embeddings `hidden` [rows·seqLen, H]: [rows·(n + seqLen), H].
 *
 * @example embeddings: (ctx, hidden) => prependVirtualTokens(ctx, hidden, ctx.param('prompt_embeddings'), 4)
 */
export function prependVirtualTokens(ctx: TrainingHookContext, hidden: string, virtual: string, n: number): string {
  const { g, rows, seqLen } = ctx;
  const H = ctx.arch.hiddenSize;
  const own = g.apply('Reshape', [hidden, g.ints([rows, seqLen, H])]); // [B, T, H]
  const prompt = g.apply('Expand', [g.apply('Reshape', [virtual, g.ints([1, n, H])]), g.ints([rows, n, H])]); // [B, n, H]
  return g.apply('Reshape', [g.apply('Concat', [prompt, own], { axis: 1 }), g.ints([rows * (n + seqLen), H])]); // [B·(n+T), H]
}

/**
 * adapter_config.json as save_pretrained writes a PromptTuningConfig for a causal LM (sorted keys,
 * inference_mode true), with the fields _prepare_prompt_learning_config fills from the model
 * config: num_layers, token_dim = hidden size, num_attention_heads (no key/value-head change:
 * that is for prefix tuning only), num_transformer_submodules 1 for a decoder-only model.
 * TEXT records the server's tokenizer as the base model's (PEFT requires tokenizer_name_or_path);
 * a continued delta keeps its own.
 */
function promptTuningConfigText(arch: ArchitectureSpec, l: PromptTuningLayout, baseModel: string): string {
  const config = {
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    inference_mode: true,
    modules_to_save: null,
    num_attention_heads: arch.numHeads,
    num_layers: arch.numLayers,
    num_transformer_submodules: 1,
    num_virtual_tokens: l.numVirtualTokens,
    peft_type: 'PROMPT_TUNING',
    prompt_tuning_init: l.init,
    prompt_tuning_init_text: l.initText,
    revision: null,
    task_type: 'CAUSAL_LM',
    token_dim: arch.hiddenSize,
    tokenizer_kwargs: null,
    tokenizer_name_or_path: l.tokenizerName ?? (l.init === 'TEXT' ? baseModel : null),
  };
  return JSON.stringify(config, null, 2);
}

registerTrainableKind(promptTuningTraining);
