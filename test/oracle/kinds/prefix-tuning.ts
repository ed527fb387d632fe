/**
 * Prefix tuning as PEFT applies it (written from PEFT's source, not from deltaserve's kind), and a
 * writer of PEFT prefix-tuning adapters for tests.
 *
 * PEFT (src/peft/):
 * - utils/other.py `_prepare_prompt_learning_config`: num_layers, token_dim, num_attention_heads
 *   default to the model config's num_hidden_layers|n_layer, hidden_size|n_embd,
 *   num_attention_heads|n_head; for PREFIX_TUNING on a config with num_key_value_heads,
 *   head_dim = config.head_dim or token_dim // num_attention_heads, then
 *   token_dim = head_dim · num_key_value_heads and num_attention_heads = num_key_value_heads.
 * - tuners/prefix_tuning/model.py `PrefixEncoder`: with prefix_projection (training) an Embedding
 *   [n, token_dim] and Linear(token_dim, encoder_hidden_size) → Tanh → Linear(…, num_layers·2·token_dim);
 *   without it (or in inference_mode) one Embedding [n, num_layers·2·token_dim].
 * - peft_model.py `get_prompt_embedding_to_save` / tuners_utils.py `BasePromptEncoder`: the file
 *   holds `prompt_embeddings` = the encoder's output for tokens 0..n-1 (the projected prefix), which
 *   an inference-mode model loads as its Embedding weight.
 * - peft_model.py `get_prompt` (inference_mode): past_key_values = embedding.weight, viewed
 *   [batch, n, num_layers·2, num_attention_heads, token_dim // num_attention_heads], permuted
 *   [2, 0, 3, 1, 4] and split into chunks of 2 along the first axis: layer l's key is chunk l's
 *   index 0, its value index 1, each [batch, heads, n, head_dim], put into a DynamicCache as is.
 * - peft_model.py `PeftModelForCausalLM.forward` / `prepare_inputs_for_generation`: the attention
 *   mask gets n ones in front (every token sees the prefix), cache_position and position_ids are
 *   shifted by n (the prompt starts at position n): oracleForward's `prefix` does exactly this.
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeSafetensors, float32ToBf16, float32ToF16 } from '../../../src/model/safetensors.js';
import { seededNormal } from '../../../src/model/random.js';
import { loadSafetensorsF32, readConfig, type TinyDtype } from '../checkpoints.js';
import type { OracleDelta, Vec } from '../transformer.js';

/** The prompt-learning fields PEFT fills in from the model config (see _prepare_prompt_learning_config). */
export interface PreparedPrefixConfig {
  numLayers: number;
  tokenDim: number;
  numAttentionHeads: number;
  encoderHiddenSize: number;
}

/** `_prepare_prompt_learning_config` for PREFIX_TUNING on a model config (config.json as a dict). */
export function preparePrefixConfig(adapter: any, model: any): PreparedPrefixConfig {
  const numLayers = adapter.num_layers ?? model.num_hidden_layers ?? model.num_layers ?? model.n_layer;
  let tokenDim = adapter.token_dim ?? model.hidden_size ?? model.n_embd ?? model.d_model;
  let numAttentionHeads = adapter.num_attention_heads ?? model.num_attention_heads ?? model.n_head ?? model.num_heads;
  if ('num_key_value_heads' in model) {
    const headDim = model.head_dim ?? Math.floor(tokenDim / numAttentionHeads);
    tokenDim = headDim * model.num_key_value_heads;
    numAttentionHeads = model.num_key_value_heads;
  }
  return { numLayers, tokenDim, numAttentionHeads, encoderHiddenSize: adapter.encoder_hidden_size ?? tokenDim };
}

/**
 * The OracleDelta of a PEFT prefix-tuning adapter directory on a model (config.json as a dict):
 * per layer, the n prefix keys and values get_prompt puts into the cache.
 */
export function loadOraclePrefix(adapterDir: string, modelConfig: any): OracleDelta {
  const adapter = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8'));
  const weight = loadSafetensorsF32(path.join(adapterDir, 'adapter_model.safetensors')).get('prompt_embeddings');
  if (!weight) throw new Error('oracle: no prompt_embeddings');
  const c = preparePrefixConfig(adapter, modelConfig);
  const n: number = adapter.num_virtual_tokens;
  if (weight.shape[0] !== n || weight.shape[1] !== c.numLayers * 2 * c.tokenDim) throw new Error(`oracle: prompt_embeddings [${weight.shape}] does not fit the embedding [${n}, ${c.numLayers * 2 * c.tokenDim}]`);
  return { prefix: getPrompt(weight.data, n, c) };
}

/** get_prompt for batch 1: view [n, L·2, H, D] → permute [L·2, H, n, D] → split in (key, value) pairs. */
function getPrompt(embedding: ArrayLike<number>, n: number, c: PreparedPrefixConfig): { key: Vec[]; value: Vec[] }[] {
  const L2 = c.numLayers * 2;
  const H = c.numAttentionHeads;
  const D = c.tokenDim / H;
  const viewed = (p: number, j: number, h: number, d: number) => embedding[((p * L2 + j) * H + h) * D + d]!;
  // permuted[j][h][p][d] = viewed[p][j][h][d]; a cache entry at position p is [H · D] (head-major).
  const positions = (j: number): Vec[] =>
    Array.from({ length: n }, (_, p) => {
      const row = new Float64Array(H * D);
      for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) row[h * D + d] = viewed(p, j, h, d);
      return row;
    });
  return Array.from({ length: c.numLayers }, (_, l) => ({ key: positions(2 * l), value: positions(2 * l + 1) }));
}

export interface TinyPrefixOptions {
  seed?: number;
  numVirtualTokens: number;
  /** Train-time projection MLP: the file then holds its output, as PEFT saves it. */
  prefixProjection?: boolean;
  encoderHiddenSize?: number;
  dtype?: TinyDtype;
  /** The base checkpoint directory the adapter is for (config.json is read from it). */
  baseDir: string;
}

/**
 * Writes a PEFT prefix-tuning adapter (adapter_config.json with PEFT's field names and the values
 * _prepare_prompt_learning_config gives them, + adapter_model.safetensors with prompt_embeddings)
 * for the checkpoint in `options.baseDir`. Returns the saved prompt_embeddings.
 */
export function writeTinyPrefixTuning(dir: string, options: TinyPrefixOptions): Float32Array {
  const model = readConfig(options.baseDir);
  const n = options.numVirtualTokens;
  const c = preparePrefixConfig({ encoder_hidden_size: options.encoderHiddenSize }, model);
  const rand = seededNormal(options.seed ?? 1);
  const width = c.numLayers * 2 * c.tokenDim;
  const saved = options.prefixProjection ? projectedPrefix(n, c, rand) : Float32Array.from({ length: n * width }, () => rand());
  const dtype = options.dtype ?? 'F32';
  const data = dtype === 'F32' ? saved : dtype === 'BF16' ? float32ToBf16(saved) : float32ToF16(saved);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), encodeSafetensors({ prompt_embeddings: { dtype, shape: [n, width], data } }, { format: 'pt' }));
  const config = {
    auto_mapping: null,
    base_model_name_or_path: null,
    encoder_hidden_size: c.encoderHiddenSize,
    inference_mode: true,
    init_weights: null,
    modules_to_save: null,
    num_attention_heads: c.numAttentionHeads,
    num_layers: c.numLayers,
    num_transformer_submodules: 1,
    num_virtual_tokens: n,
    peft_type: 'PREFIX_TUNING',
    peft_version: '0.21.0',
    prefix_projection: !!options.prefixProjection,
    revision: null,
    task_type: 'CAUSAL_LM',
    token_dim: c.tokenDim,
  };
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  // What the file holds after the dtype round trip (F16/BF16 convert back exactly).
  return dtype === 'F32' ? saved : loadSafetensorsF32(path.join(dir, 'adapter_model.safetensors')).get('prompt_embeddings')!.data;
}

/** PrefixEncoder.forward with prefix_projection: transform(embedding(0..n-1)), Linear → Tanh → Linear. */
function projectedPrefix(n: number, c: PreparedPrefixConfig, rand: () => number): Float32Array {
  const { tokenDim: T, encoderHiddenSize: E } = c;
  const out = c.numLayers * 2 * T;
  const embedding = Float64Array.from({ length: n * T }, () => rand());
  const w1 = Float64Array.from({ length: E * T }, () => rand() / Math.sqrt(T));
  const b1 = Float64Array.from({ length: E }, () => 0.1 * rand());
  const w2 = Float64Array.from({ length: out * E }, () => rand() / Math.sqrt(E));
  const b2 = Float64Array.from({ length: out }, () => 0.1 * rand());
  const saved = new Float32Array(n * out);
  for (let p = 0; p < n; p++) {
    const hidden = Float64Array.from({ length: E }, (_, e) => {
      let acc = b1[e]!;
      for (let t = 0; t < T; t++) acc += w1[e * T + t]! * embedding[p * T + t]!;
      return Math.tanh(acc);
    });
    for (let o = 0; o < out; o++) {
      let acc = b2[o]!;
      for (let e = 0; e < E; e++) acc += w2[o * E + e]! * hidden[e]!;
      saved[p * out + o] = acc;
    }
  }
  return saved;
}

/** PrefixEncoder's parameters as PEFT names them (adapter name left out), float64. */
export interface PrefixEncoderParams {
  /** Without prefix_projection: embedding.weight [n, L·2·token_dim], the prefix itself. */
  prefix?: Float64Array;
  /** With prefix_projection: embedding.weight [n, token_dim], transform.0 (Linear token_dim → E), transform.2 (Linear E → L·2·token_dim). */
  projection?: { embedding: Float64Array; w1: Float64Array; b1: Float64Array; w2: Float64Array; b2: Float64Array };
}

/**
 * The OracleDelta of a training-mode PrefixEncoder on a model (config.json as a dict):
 * PrefixEncoder.forward(arange(n)) — the embedding, or transform(embedding) = Linear → Tanh →
 * Linear — in float64, then get_prompt's split into each layer's keys and values.
 */
export function prefixEncoderOracleDelta(params: PrefixEncoderParams, n: number, model: any): OracleDelta {
  const c = preparePrefixConfig({}, model);
  const width = c.numLayers * 2 * c.tokenDim;
  let prefix = params.prefix;
  if (params.projection) {
    const { embedding, w1, b1, w2, b2 } = params.projection;
    const T = c.tokenDim;
    const E = b1.length;
    prefix = new Float64Array(n * width);
    for (let p = 0; p < n; p++) {
      const hidden = Float64Array.from({ length: E }, (_, e) => {
        let acc = b1[e]!;
        for (let t = 0; t < T; t++) acc += w1[e * T + t]! * embedding[p * T + t]!;
        return Math.tanh(acc);
      });
      for (let o = 0; o < width; o++) {
        let acc = b2[o]!;
        for (let e = 0; e < E; e++) acc += w2[o * E + e]! * hidden[e]!;
        prefix[p * width + o] = acc;
      }
    }
  }
  if (!prefix || prefix.length !== n * width) throw new Error(`oracle: a prefix of ${prefix?.length} values is not [${n}, ${width}]`);
  return { prefix: getPrompt(prefix, n, c) };
}
