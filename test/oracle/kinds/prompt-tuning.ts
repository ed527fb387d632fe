/**
 * Prompt tuning and P-tuning for the oracle, written from PEFT's source (a main snapshot close to
 * 0.21), not from deltaserve's lowering:
 *
 * - Loading (PeftModel.from_pretrained → set_peft_model_state_dict): the config is read with
 *   inference_mode = True; `_setup_prompt_encoder` sets num_transformer_submodules to 1 when it
 *   is null and the task is not SEQ_2_SEQ_LM, and builds the prompt encoder with
 *   `embedding = nn.Embedding(num_virtual_tokens * num_transformer_submodules, token_dim)` — for
 *   P-tuning without mlp_head/lstm_head, since inference_mode skips them
 *   (tuners/p_tuning/model.py); BasePromptEncoder._load_adapter_state_dict loads the saved
 *   `prompt_embeddings` into that embedding with strict=True (tuners/tuners_utils.py).
 * - What was saved (BasePromptEncoder._get_adapter_state_dict): `embedding.weight` in inference
 *   mode, else `get_prompt_embedding_to_save` = `prompt_encoder(arange(n))` — for P-tuning the
 *   encoder's output, which the writer below computes as PromptEncoder.forward does with an MLP.
 * - Inference (PeftModelForCausalLM.forward and prepare_inputs_for_generation): `get_prompt`
 *   returns `embedding.weight` (inference mode), repeated per batch row; the model runs on
 *   `cat(prompts, word_embeddings(input_ids))` with position_ids dropped, so the virtual tokens
 *   take positions 0..n-1 (GPT-2 adds wpe[0..n-1] to them) and the prompt starts at n. Decode
 *   steps then feed only the last token against the cache, at position n + prompt length + i.
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeSafetensors, float32ToBf16, float32ToF16 } from '../../../src/model/safetensors.js';
import { seededNormal } from '../../../src/model/random.js';
import { loadSafetensorsF32 } from '../checkpoints.js';
import type { OracleDelta } from '../transformer.js';

/**
 * The OracleDelta of a PROMPT_TUNING or P_TUNING adapter directory: its virtual embeddings, the
 * rows of prompt_embeddings, in order.
 */
export function oraclePromptTuning(adapterDir: string): OracleDelta {
  const config = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8'));
  if (config.peft_type !== 'PROMPT_TUNING' && config.peft_type !== 'P_TUNING') throw new Error(`oracle: peft_type ${config.peft_type} is not prompt tuning`);
  if (config.task_type !== 'CAUSAL_LM') throw new Error('oracle: only PeftModelForCausalLM prepends the prompt');
  const submodules: number = config.num_transformer_submodules ?? 1;
  const total = config.num_virtual_tokens * submodules;
  const saved = loadSafetensorsF32(path.join(adapterDir, 'adapter_model.safetensors')).get('prompt_embeddings');
  if (!saved) throw new Error('oracle: no prompt_embeddings');
  const [rows, dim] = saved.shape as [number, number];
  if (rows !== total || (config.token_dim != null && dim !== config.token_dim)) throw new Error(`oracle: prompt_embeddings [${saved.shape}] does not fit Embedding(${total}, ${config.token_dim})`);
  const virtualEmbeddings = Array.from({ length: rows }, (_, k) => Float64Array.from(saved.data.subarray(k * dim, (k + 1) * dim)));
  return { virtualEmbeddings };
}

export interface TinyPromptTuningOptions {
  peftType: 'PROMPT_TUNING' | 'P_TUNING';
  numVirtualTokens: number;
  /** The base model's hidden size (PEFT's token_dim). */
  tokenDim: number;
  seed?: number;
  dtype?: 'F32' | 'F16' | 'BF16';
  /** P-tuning: the MLP encoder's hidden size (PEFT's encoder_hidden_size). */
  encoderHiddenSize?: number;
  /** Fields to add or override in adapter_config.json. */
  config?: Record<string, unknown>;
}

/**
 * Writes a PEFT prompt-tuning or P-tuning adapter as `save_pretrained` does: adapter_config.json
 * with PEFT's field names and defaults (inference_mode true, as save_pretrained writes it) and
 * adapter_model.safetensors holding `prompt_embeddings` [n, token_dim]. Prompt tuning saves its
 * embedding (RANDOM init is N(0, 1), nn.Embedding's); P-tuning saves the MLP encoder's output
 * for inputs 0..n-1: Linear(d, h) → ReLU → Linear(h, h) → ReLU → Linear(h, d) over its embedding.
 */
export function writeTinyPromptTuning(dir: string, options: TinyPromptTuningOptions): Float32Array {
  const { numVirtualTokens: n, tokenDim: d } = options;
  const normal = seededNormal(options.seed ?? 1);
  const embedding = Float32Array.from({ length: n * d }, () => normal());
  const saved = options.peftType === 'P_TUNING' ? mlpEncoder(embedding, n, d, options.encoderHiddenSize ?? d, normal) : embedding;
  const dtype = options.dtype ?? 'F32';
  const data = dtype === 'F32' ? saved : dtype === 'BF16' ? float32ToBf16(saved) : float32ToF16(saved);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), encodeSafetensors({ prompt_embeddings: { dtype, shape: [n, d], data } }, { format: 'pt' }));
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ ...promptConfig(options), ...options.config }, null, 2));
  return saved;
}

/** adapter_config.json as PEFT 0.21 writes it for a causal LM (dataclass fields in order, defaults). */
function promptConfig(options: TinyPromptTuningOptions): Record<string, unknown> {
  const common = {
    auto_mapping: null,
    base_model_name_or_path: null,
    inference_mode: true,
    modules_to_save: null,
    num_attention_heads: 4,
    num_layers: 2,
    num_transformer_submodules: 1,
    num_virtual_tokens: options.numVirtualTokens,
    peft_type: options.peftType,
    peft_version: '0.21.0',
    revision: null,
    task_type: 'CAUSAL_LM',
    token_dim: options.tokenDim,
  };
  if (options.peftType === 'P_TUNING') {
    return { ...common, encoder_dropout: 0.0, encoder_hidden_size: options.encoderHiddenSize ?? options.tokenDim, encoder_num_layers: 2, encoder_reparameterization_type: 'MLP' };
  }
  return { ...common, prompt_tuning_init: 'RANDOM', prompt_tuning_init_text: null, tokenizer_kwargs: null, tokenizer_name_or_path: null };
}

/** PromptEncoder.forward with encoder_reparameterization_type 'MLP', in float64, rows independent. */
function mlpEncoder(embedding: Float32Array, n: number, d: number, h: number, normal: () => number): Float32Array {
  const layer = (inF: number, outF: number) => ({ inF, outF, w: Float64Array.from({ length: outF * inF }, () => normal() / Math.sqrt(inF)), b: Float64Array.from({ length: outF }, () => 0.1 * normal()) });
  const layers = [layer(d, h), layer(h, h), layer(h, d)];
  const out = new Float32Array(n * d);
  for (let k = 0; k < n; k++) {
    let x = Float64Array.from(embedding.subarray(k * d, (k + 1) * d));
    layers.forEach(({ inF, outF, w, b }, i) => {
      const y = Float64Array.from(b);
      for (let o = 0; o < outF; o++) for (let j = 0; j < inF; j++) y[o]! += w[o * inF + j]! * x[j]!;
      x = i < layers.length - 1 ? y.map((v) => Math.max(v, 0)) : y;
    });
    out.set(x, k * d);
  }
  return out;
}

/**
 * The OracleDelta of prompt-tuning parameters as PEFT's PromptEmbedding holds them: its weight
 * [n, token_dim] (what save_pretrained writes as prompt_embeddings), row k the k-th virtual token.
 */
export function promptTuningOracleDelta(weight: Float64Array, n: number): OracleDelta {
  const dim = weight.length / n;
  return { virtualEmbeddings: Array.from({ length: n }, (_, k) => weight.slice(k * dim, (k + 1) * dim)) };
}

/** A training-mode P-tuning PromptEncoder (MLP) by PEFT's parameters, float64: Embedding [n, d] and mlp_head's Linear layers 0, 2, 4. */
export interface PTuningEncoderParams {
  embedding: Float64Array;
  /** [weight [out, in], bias [out]] of Linear(d, h), Linear(h, h), Linear(h, d). */
  layers: [Float64Array, Float64Array][];
}

/**
 * The OracleDelta of a training-mode P-tuning encoder: PromptEncoder.forward(arange(n)) with
 * encoder_reparameterization_type MLP = mlp_head(embedding), Linear → ReLU → Linear → ReLU →
 * Linear (peft/tuners/p_tuning/model.py), in float64; its rows are the virtual tokens.
 */
export function pTuningOracleDelta(params: PTuningEncoderParams, n: number): OracleDelta {
  const d = params.embedding.length / n;
  const virtualEmbeddings = Array.from({ length: n }, (_, k) => {
    let x = params.embedding.slice(k * d, (k + 1) * d);
    params.layers.forEach(([w, b], i) => {
      const inF = x.length;
      const y = Float64Array.from(b);
      for (let o = 0; o < y.length; o++) for (let j = 0; j < inF; j++) y[o]! += w[o * inF + j]! * x[j]!;
      x = i < params.layers.length - 1 ? y.map((v) => Math.max(v, 0)) : y;
    });
    return x;
  });
  return { virtualEmbeddings };
}
