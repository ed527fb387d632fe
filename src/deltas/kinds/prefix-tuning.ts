/**
 * Prefix tuning (PEFT `PREFIX_TUNING`; Li & Liang, 2021): n learned key/value pairs per layer,
 * placed in the KV cache before the request's own tokens, which all attend to them.
 *
 * What PEFT saves and serves (peft_model.py get_prompt_embedding_to_save, get_prompt):
 *   prompt_embeddings [n, layers · 2 · W], W = token_dim = kvHeads · headDim (PEFT sets
 *   token_dim and num_attention_heads from num_key_value_heads on grouped-query models). With
 *   prefix_projection the file holds the MLP's *output*, and a model loaded for inference reads
 *   it as its embedding, so the MLP is never needed here. get_prompt views it as
 *   [n, layers·2, kvHeads, headDim], permutes to [layers·2, kvHeads, n, headDim] and splits pairs:
 *     key[l][p, h·D + d]   = prompt_embeddings[p, (2l)·W + h·D + d]
 *     value[l][p, h·D + d] = prompt_embeddings[p, (2l + 1)·W + h·D + d]
 *   The pairs enter the cache as they are (no rotary: caches hold post-rotary keys), and the
 *   request's tokens start at position n (PEFT shifts cache_position and position_ids by n).
 *
 * Slot layout: prefix_tuning.kv [layers, 2, N, W], N = --max-virtual-tokens, rows past n zero, so
 * each layer's key (or value) is one contiguous [n, W] run. The scheduler copies those into the
 * row's KV cache at admission (prefixKeyValues) and starts the row at pastLength n; no graph hook,
 * no per-pass feed, and nothing is prefilled beyond the request's own prompt.
 */
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { ParsedSafetensors } from '../../model/safetensors.js';
import { DeltaValidationError } from '../errors.js';
import { registerDeltaKind, type DeltaKind, type DeltaLimits, type LayerKeyValues, type ParsedDelta, type SlotTensor } from '../kind.js';
import { firstNonFinite } from '../peft-lora.js';
import { ConfigFields, show } from '../peft/config-fields.js';

export const PREFIX_KV = 'prefix_tuning.kv';
/** PEFT's name for the saved prefix (BasePromptEncoder._get_adapter_state_dict). */
export const PROMPT_EMBEDDINGS = 'prompt_embeddings';
const TASK_TYPES = ['SEQ_CLS', 'SEQ_2_SEQ_LM', 'CAUSAL_LM', 'TOKEN_CLS', 'QUESTION_ANS', 'FEATURE_EXTRACTION'];

/** Key/value width of one position: what PEFT's token_dim is for this backbone. */
const kvWidth = (arch: ArchitectureSpec) => arch.numKvHeads * arch.headDim;

export const prefixTuning: DeltaKind = {
  name: 'prefix_tuning',
  family: 'addition',
  format: "PEFT peft_type 'PREFIX_TUNING'",
  detect: (config) => config['peft_type'] === 'PREFIX_TUNING',

  parse({ name, config, weights, arch, limits }): ParsedDelta {
    const fields = new ConfigFields(config);
    const settings = readPrefixConfig(fields, arch, limits);
    if (fields.problems.length) throw new DeltaValidationError(name, fields.problems.map((p) => `adapter_config.json: ${p}`));
    const problems: string[] = [];
    const warnings: string[] = [];
    const embeddings = readPromptEmbeddings(weights, arch, settings, problems, warnings);
    if (!embeddings) throw new DeltaValidationError(name, problems);
    const n = settings.virtualTokens;
    const tensors = new Map([[PREFIX_KV, toSlotLayout(embeddings, n, arch.numLayers, kvWidth(arch), limits.maxVirtualTokens)]]);
    const summary = { virtualTokens: n, layers: arch.numLayers, params: embeddings.length, prefixProjection: settings.prefixProjection };
    return { kind: 'prefix_tuning', name, tensors, virtualTokens: n, summary, warnings };
  },

  slotTensors(arch, limits): SlotTensor[] {
    const dims = [arch.numLayers, 2, limits.maxVirtualTokens, kvWidth(arch)];
    return [{ name: PREFIX_KV, length: dims.reduce((a, b) => a * b, 1), neutral: 0, dims, hostOnly: true }];
  },

  // The prefix reaches attention through the KV cache (pastLength n), not through the graph.
  lowering: () => ({ kind: 'prefix_tuning' }),
  feeds: () => [],
  prefixKeyValues: (slot, n, arch) => prefixKeyValues(slot(PREFIX_KV), n, arch),
};

/** The settings a prefix-tuning config fixes, read and checked against the backbone. */
interface PrefixSettings {
  virtualTokens: number;
  prefixProjection: boolean;
}

function readPrefixConfig(fields: ConfigFields, arch: ArchitectureSpec, limits: DeltaLimits): PrefixSettings {
  const peftType = fields.config['peft_type'];
  if (peftType !== 'PREFIX_TUNING') fields.problems.push(`peft_type ${show(peftType)} is not supported here (expected 'PREFIX_TUNING')`);
  const virtualTokens = readVirtualTokens(fields, limits);
  checkBackboneFields(fields, arch);
  readTaskType(fields);
  const prefixProjection = fields.boolean('prefix_projection', false);
  fields.boolean('inference_mode', false);
  // Used only to train the projection MLP, whose output is what the file holds.
  fields.number('encoder_hidden_size', { fallback: 1, integer: true, min: 1, max: 1 << 24 });
  fields.oneOf('init_weights', ['zero'], 'zero');
  const empty = (v: unknown) => Array.isArray(v) && v.length === 0;
  fields.unsupported('modules_to_save', empty, 'modules_to_save is not supported (a delta may not replace modules of the backbone)');
  for (const field of ['base_model_name_or_path', 'revision', 'peft_version']) {
    if (fields.has(field) && typeof fields.config[field] !== 'string') fields.problems.push(`${field} must be a string or null, got ${show(fields.config[field])}`);
  }
  const mapping = fields.config['auto_mapping'];
  if (mapping !== undefined && mapping !== null && (typeof mapping !== 'object' || Array.isArray(mapping))) fields.problems.push(`auto_mapping must be an object or null, got ${show(mapping)}`);
  return { virtualTokens, prefixProjection };
}

/** num_virtual_tokens: required by PEFT (the prefix has that many rows), at most the server's limit. */
function readVirtualTokens(fields: ConfigFields, limits: DeltaLimits): number {
  if (!fields.has('num_virtual_tokens')) return fields.fail('num_virtual_tokens', 'is required (the number of rows of prompt_embeddings)', 0);
  const n = fields.number('num_virtual_tokens', { fallback: 0, integer: true, min: 1 });
  if (n > limits.maxVirtualTokens) return fields.fail('num_virtual_tokens', `${n} exceeds the server's max virtual tokens ${limits.maxVirtualTokens}`, 0);
  return n;
}

/**
 * num_layers, token_dim, num_attention_heads (PEFT fills them from the model config, token_dim and
 * heads from num_key_value_heads where there is one) and num_transformer_submodules must describe
 * this backbone: get_prompt shapes the prefix with them, and a mismatch fails in attention.
 */
function checkBackboneFields(fields: ConfigFields, arch: ArchitectureSpec): void {
  const heads = arch.family === 'gpt2' ? 'n_head' : 'num_key_value_heads';
  const expect = (field: string, value: number, what: string) => {
    const got = fields.number(field, { fallback: value, integer: true, min: 1 });
    if (got !== value) fields.problems.push(`${field} ${got} does not match the backbone's ${what} (the adapter was made for another model)`);
  };
  expect('num_layers', arch.numLayers, `${arch.numLayers} layers`);
  expect('token_dim', kvWidth(arch), `key/value width ${kvWidth(arch)} (${heads} ${arch.numKvHeads} × head_dim ${arch.headDim})`);
  expect('num_attention_heads', arch.numKvHeads, `${arch.numKvHeads} key/value heads (${heads})`);
  const submodules = fields.number('num_transformer_submodules', { fallback: 1, integer: true, min: 1 });
  if (submodules !== 1) fields.problems.push(`num_transformer_submodules ${submodules} is for encoder-decoder models; ${arch.family} is decoder-only (1)`);
}

/** CAUSAL_LM, or none (AutoPeftModelForCausalLM serves such an adapter as a causal LM too). */
function readTaskType(fields: ConfigFields): void {
  const task = fields.oneOf('task_type', TASK_TYPES, 'CAUSAL_LM');
  if (task !== 'CAUSAL_LM') fields.problems.push(`task_type '${task}' is not served: deltaserve generates text with the prefix (task_type 'CAUSAL_LM')`);
}

/**
 * The prefix as PEFT saved it, [n, layers · 2 · W], checked for name, dtype, shape and finite
 * values; problems go to `problems`. Other tensors are ignored with a warning, as PEFT's
 * load_state_dict(strict=False) ignores them.
 */
function readPromptEmbeddings(weights: ParsedSafetensors, arch: ArchitectureSpec, settings: PrefixSettings, problems: string[], warnings: string[]): Float32Array | undefined {
  for (const key of weights.header.tensors.keys()) {
    if (key !== PROMPT_EMBEDDINGS) warnings.push(`${key}: ignored (a prefix-tuning adapter is read from ${PROMPT_EMBEDDINGS} alone; PEFT ignores unexpected keys)`);
  }
  const entry = weights.header.tensors.get(PROMPT_EMBEDDINGS);
  if (!entry) {
    problems.push(`adapter_model.safetensors has no ${PROMPT_EMBEDDINGS} tensor (PEFT saves the prefix under that name)`);
    return undefined;
  }
  if (!['F32', 'F16', 'BF16'].includes(entry.dtype)) problems.push(`${PROMPT_EMBEDDINGS}: dtype ${entry.dtype} is not supported (F32, F16, BF16)`);
  const n = settings.virtualTokens;
  const width = arch.numLayers * 2 * kvWidth(arch);
  const [rows, cols] = entry.shape;
  if (entry.shape.length !== 2 || rows !== n || cols !== width) {
    const raw = settings.prefixProjection && cols === kvWidth(arch) ? "; this looks like the embeddings before prefix_projection's MLP, but PEFT saves the MLP's output" : '';
    problems.push(`${PROMPT_EMBEDDINGS}: shape [${entry.shape}], expected [${n}, ${width}] (num_virtual_tokens ${n}; ${arch.numLayers} layers × key and value × width ${kvWidth(arch)})${raw}`);
  }
  if (problems.length) return undefined;
  const data = weights.view(PROMPT_EMBEDDINGS);
  const bad = firstNonFinite(data);
  if (bad >= 0) problems.push(`${PROMPT_EMBEDDINGS}: value at index ${bad} (virtual token ${Math.floor(bad / width)}) is not finite (${data[bad]})`);
  return problems.length ? undefined : data;
}

/**
 * PEFT's [n, layers · 2 · W] prefix → the slot layout [layers, 2, N, W], zero past row n; pure,
 * so the loader thread runs it.
 *
 * @example toSlotLayout(embeddings, 4, 2, 32, 64).length // 2 * 2 * 64 * 32
 */
export function toSlotLayout(embeddings: Float32Array, n: number, layers: number, width: number, maxVirtualTokens: number): Float32Array {
  const out = new Float32Array(layers * 2 * maxVirtualTokens * width);
  for (let p = 0; p < n; p++) {
    // j = 2·layer + (0 key, 1 value): PEFT's layers·2 axis, in its order.
    for (let j = 0; j < layers * 2; j++) {
      const from = (p * layers * 2 + j) * width;
      out.set(embeddings.subarray(from, from + width), (j * maxVirtualTokens + p) * width);
    }
  }
  return out;
}

/**
 * Each layer's prefix keys and values, [n, kvHeads · headDim], as views of one slot's
 * prefix_tuning.kv (the KV cache copies them at once).
 *
 * @example prefixKeyValues(stacks.range(PREFIX_KV, 3, 4), 8, arch)[0].key.length // 8 * kvHeads * headDim
 */
export function prefixKeyValues(slot: Float32Array, n: number, arch: ArchitectureSpec): LayerKeyValues[] {
  const width = kvWidth(arch);
  const maxVirtualTokens = slot.length / (arch.numLayers * 2 * width);
  if (!Number.isInteger(maxVirtualTokens) || n > maxVirtualTokens) throw new Error(`prefix_tuning: a slot of ${slot.length} values cannot hold ${n} virtual tokens of ${arch.numLayers} layers × 2 × ${width}`);
  const run = (j: number) => slot.subarray(j * maxVirtualTokens * width, (j * maxVirtualTokens + n) * width);
  return Array.from({ length: arch.numLayers }, (_, layer) => ({ key: run(2 * layer), value: run(2 * layer + 1) }));
}

registerDeltaKind(prefixTuning);
