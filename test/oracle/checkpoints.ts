/**
 * Writers of tiny, deterministic Hugging Face checkpoints (and PEFT LoRA
 * adapters) for tests, plus an f32 weight loader for the oracle.
 *
 * Families: llama (untied lm_head), qwen2 (q/k/v biases, tied), gpt2 (Conv1D
 * weights stored [in,out], biases everywhere, tied).
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeSafetensors, float32ToBf16, float32ToF16 } from '../../src/model/safetensors.js';
import { seededNormal } from '../../src/model/random.js';
import { oracleLoraFromPeft, type OracleLora, type OracleTensor, type OracleWeights } from './transformer.js';

export type TinyFamily = 'llama' | 'qwen2' | 'gpt2';
export type TinyDtype = 'F32' | 'F16' | 'BF16';

export interface TinyCheckpointOptions {
  seed?: number;
  dtype?: TinyDtype;
  sharded?: boolean;
  /** 5 (default): `rope_parameters` + `dtype`; 4: top-level `rope_theta` + `torch_dtype`. */
  transformersVersion?: 4 | 5;
  /** llama/qwen2 only: use llama3 rope scaling (factor 8, low 1, high 4, original_max_position_embeddings 32). */
  llama3Rope?: boolean;
  /** gpt2 only: store tensor names without the `transformer.` prefix (like the original openai-community/gpt2). */
  bareGpt2Names?: boolean;
}

export interface TinyLoraOptions {
  seed?: number;
  r: number;
  alpha: number;
  /** PEFT target_modules (short names such as 'q_proj', 'c_attn', 'lm_head'). */
  targetModules: string[];
  useRslora?: boolean;
  /** The base checkpoint directory (written by writeTinyCheckpoint); module shapes are read from it. */
  baseDir: string;
}

const DTYPE_NAME: Record<TinyDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

// ---------------------------------------------------------------------------
// configs

function tinyConfig(family: TinyFamily, tv: 4 | 5, dtype: TinyDtype, llama3Rope: boolean): any {
  const dtypeKey = tv === 5 ? { dtype: DTYPE_NAME[dtype] } : { torch_dtype: DTYPE_NAME[dtype] };
  const transformers_version = tv === 5 ? '5.17.0' : '4.57.1';
  if (family === 'gpt2') {
    return {
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      activation_function: 'gelu_new',
      attn_pdrop: 0.0,
      bos_token_id: 299,
      eos_token_id: 299,
      embd_pdrop: 0.0,
      initializer_range: 0.02,
      layer_norm_epsilon: 1e-5,
      n_ctx: 128,
      n_embd: 64,
      n_head: 4,
      n_inner: null,
      n_layer: 2,
      n_positions: 128,
      resid_pdrop: 0.0,
      scale_attn_by_inverse_layer_idx: false,
      scale_attn_weights: true,
      tie_word_embeddings: true,
      use_cache: true,
      vocab_size: 300,
      ...dtypeKey,
      transformers_version,
    };
  }
  const theta = 10000.0;
  const llama3 = { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 32 };
  const rope =
    tv === 5
      ? { rope_parameters: llama3Rope ? { rope_theta: theta, rope_type: 'llama3', ...llama3 } : { rope_theta: theta, rope_type: 'default' } }
      : { rope_theta: theta, rope_scaling: llama3Rope ? { rope_type: 'llama3', ...llama3 } : null };
  if (family === 'llama') {
    return {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 1,
      eos_token_id: 2,
      head_dim: 16,
      hidden_act: 'silu',
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 128,
      max_position_embeddings: 256,
      mlp_bias: false,
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      pretraining_tp: 1,
      rms_norm_eps: 1e-6,
      ...rope,
      tie_word_embeddings: false,
      use_cache: true,
      vocab_size: 300,
      ...dtypeKey,
      transformers_version,
    };
  }
  // qwen2
  return {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    attention_dropout: 0.0,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: 'silu',
    hidden_size: 64,
    initializer_range: 0.02,
    intermediate_size: 128,
    max_position_embeddings: 256,
    max_window_layers: 2,
    num_attention_heads: 4,
    num_hidden_layers: 2,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-6,
    ...rope,
    sliding_window: null,
    use_sliding_window: false,
    ...(tv === 5 ? { layer_types: ['full_attention', 'full_attention'] } : {}),
    tie_word_embeddings: true,
    use_cache: true,
    vocab_size: 300,
    ...dtypeKey,
    transformers_version,
  };
}

// ---------------------------------------------------------------------------
// weights

type TensorSpec = [name: string, shape: number[], kind: 'weight' | 'norm'];

function tensorSpecs(family: TinyFamily, config: any, bareGpt2Names: boolean): TensorSpec[] {
  const specs: TensorSpec[] = [];
  if (family === 'gpt2') {
    const P = bareGpt2Names ? '' : 'transformer.';
    const d = config.n_embd as number;
    const inner = (config.n_inner as number | null) ?? 4 * d;
    specs.push([`${P}wte.weight`, [config.vocab_size, d], 'weight']);
    specs.push([`${P}wpe.weight`, [config.n_positions, d], 'weight']);
    for (let l = 0; l < config.n_layer; l++) {
      const p = `${P}h.${l}`;
      specs.push([`${p}.ln_1.weight`, [d], 'norm'], [`${p}.ln_1.bias`, [d], 'weight']);
      // Conv1D: weight [in, out]
      specs.push([`${p}.attn.c_attn.weight`, [d, 3 * d], 'weight'], [`${p}.attn.c_attn.bias`, [3 * d], 'weight']);
      specs.push([`${p}.attn.c_proj.weight`, [d, d], 'weight'], [`${p}.attn.c_proj.bias`, [d], 'weight']);
      specs.push([`${p}.ln_2.weight`, [d], 'norm'], [`${p}.ln_2.bias`, [d], 'weight']);
      specs.push([`${p}.mlp.c_fc.weight`, [d, inner], 'weight'], [`${p}.mlp.c_fc.bias`, [inner], 'weight']);
      specs.push([`${p}.mlp.c_proj.weight`, [inner, d], 'weight'], [`${p}.mlp.c_proj.bias`, [d], 'weight']);
    }
    specs.push([`${P}ln_f.weight`, [d], 'norm'], [`${P}ln_f.bias`, [d], 'weight']);
    return specs;
  }
  const d = config.hidden_size as number;
  const heads = config.num_attention_heads as number;
  const kv = config.num_key_value_heads as number;
  const hd = (config.head_dim as number | undefined) ?? d / heads;
  const ff = config.intermediate_size as number;
  const qkvBias = family === 'qwen2' || !!config.attention_bias;
  specs.push(['model.embed_tokens.weight', [config.vocab_size, d], 'weight']);
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    specs.push([`${p}.input_layernorm.weight`, [d], 'norm']);
    specs.push([`${p}.self_attn.q_proj.weight`, [heads * hd, d], 'weight']);
    if (qkvBias) specs.push([`${p}.self_attn.q_proj.bias`, [heads * hd], 'weight']);
    specs.push([`${p}.self_attn.k_proj.weight`, [kv * hd, d], 'weight']);
    if (qkvBias) specs.push([`${p}.self_attn.k_proj.bias`, [kv * hd], 'weight']);
    specs.push([`${p}.self_attn.v_proj.weight`, [kv * hd, d], 'weight']);
    if (qkvBias) specs.push([`${p}.self_attn.v_proj.bias`, [kv * hd], 'weight']);
    specs.push([`${p}.self_attn.o_proj.weight`, [d, heads * hd], 'weight']);
    if (family === 'llama' && config.attention_bias) specs.push([`${p}.self_attn.o_proj.bias`, [d], 'weight']);
    specs.push([`${p}.post_attention_layernorm.weight`, [d], 'norm']);
    specs.push([`${p}.mlp.gate_proj.weight`, [ff, d], 'weight']);
    specs.push([`${p}.mlp.up_proj.weight`, [ff, d], 'weight']);
    specs.push([`${p}.mlp.down_proj.weight`, [d, ff], 'weight']);
  }
  specs.push(['model.norm.weight', [d], 'norm']);
  if (!config.tie_word_embeddings) specs.push(['lm_head.weight', [config.vocab_size, d], 'weight']);
  return specs;
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function encodeData(data: Float32Array, dtype: TinyDtype): ArrayBufferView {
  if (dtype === 'F32') return data;
  return dtype === 'BF16' ? float32ToBf16(data) : float32ToF16(data);
}

function writeSafetensorsFile(file: string, tensors: Array<[string, number[], Float32Array]>, dtype: TinyDtype): number {
  const record: Record<string, { dtype: TinyDtype; shape: number[]; data: ArrayBufferView }> = {};
  let bytes = 0;
  for (const [name, shape, data] of tensors) {
    const enc = encodeData(data, dtype);
    bytes += enc.byteLength;
    record[name] = { dtype, shape, data: enc };
  }
  fs.writeFileSync(file, encodeSafetensors(record, { format: 'pt' }));
  return bytes;
}

/**
 * Writes config.json, generation_config.json and the weights of a tiny random
 * model into `dir` (created if needed). Deterministic in (family, options).
 */
export function writeTinyCheckpoint(dir: string, family: TinyFamily, options: TinyCheckpointOptions = {}): { config: any } {
  const seed = options.seed ?? 0;
  const dtype = options.dtype ?? 'F32';
  const tv = options.transformersVersion ?? 5;
  if (options.llama3Rope && family === 'gpt2') throw new Error('llama3Rope does not apply to gpt2');
  const config = tinyConfig(family, tv, dtype, !!options.llama3Rope);
  fs.mkdirSync(dir, { recursive: true });

  const rand = seededNormal(seed);
  const tensors: Array<[string, number[], Float32Array]> = tensorSpecs(family, config, !!options.bareGpt2Names).map(([name, shape, kind]) => {
    const data = new Float32Array(numel(shape));
    for (let i = 0; i < data.length; i++) data[i] = kind === 'norm' ? 1 + 0.1 * rand() : 0.1 * rand();
    return [name, shape, data];
  });

  if (options.sharded) {
    const half = Math.ceil(tensors.length / 2);
    const shards = [tensors.slice(0, half), tensors.slice(half)];
    const weightMap: Record<string, string> = {};
    let total = 0;
    shards.forEach((shard, i) => {
      const fname = `model-0000${i + 1}-of-00002.safetensors`;
      total += writeSafetensorsFile(path.join(dir, fname), shard, dtype);
      for (const [name] of shard) weightMap[name] = fname;
    });
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  } else {
    writeSafetensorsFile(path.join(dir, 'model.safetensors'), tensors, dtype);
  }

  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const gen = { bos_token_id: config.bos_token_id, eos_token_id: config.eos_token_id, transformers_version: config.transformers_version };
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify(gen, null, 2));
  return { config };
}

/** PEFT/HF module path for a base-checkpoint weight name (GPT-2 always gets the `transformer.` prefix, as in GPT2LMHeadModel). */
function modulePath(family: TinyFamily, weightName: string): string {
  const mod = weightName.replace(/\.weight$/, '');
  if (family === 'gpt2' && mod !== 'lm_head' && !mod.startsWith('transformer.')) return `transformer.${mod}`;
  return mod;
}

/**
 * Writes a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors,
 * F32) for the base checkpoint in `options.baseDir`. Every 2-D weight whose
 * module's last path component is in `targetModules` gets lora_A [r,in] and
 * lora_B [out,r], both nonzero (std 0.1). GPT-2 Conv1D modules get the same
 * [r,in]/[out,r] shapes (in/out read from the Conv1D weight [in,out]) and
 * fan_in_fan_out: true in the config, as PEFT does.
 */
export function writeTinyLora(dir: string, family: TinyFamily, options: TinyLoraOptions): void {
  const { r, alpha, targetModules } = options;
  if (!(r > 0) || !Number.isInteger(r)) throw new Error(`writeTinyLora: bad r ${r}`);
  const baseWeights = loadWeightsF32(options.baseDir);
  const targets = new Set(targetModules);
  const rand = seededNormal(options.seed ?? 1);
  const tensors: Array<[string, number[], Float32Array]> = [];
  const seen = new Set<string>();

  const candidates: Array<[string, number[]]> = [...baseWeights.entries()].map(([n, t]) => [n, t.shape]);
  // Tied lm_head is still an nn.Linear in the model and can be targeted.
  if (targets.has('lm_head') && !baseWeights.has('lm_head.weight')) {
    const emb = baseWeights.get('model.embed_tokens.weight') ?? baseWeights.get('transformer.wte.weight') ?? baseWeights.get('wte.weight');
    if (emb) candidates.push(['lm_head.weight', emb.shape]);
  }
  for (const [name, shape] of candidates.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    if (!name.endsWith('.weight') || shape.length !== 2) continue;
    const mod = modulePath(family, name);
    const short = mod.split('.').pop()!;
    if (!targets.has(short)) continue;
    if (/embed_tokens|wte|wpe/.test(short)) throw new Error(`writeTinyLora: embedding LoRA not supported (${short})`);
    const conv1d = family === 'gpt2' && mod !== 'lm_head';
    const [inF, outF] = conv1d ? [shape[0]!, shape[1]!] : [shape[1]!, shape[0]!];
    const A = new Float32Array(r * inF);
    const B = new Float32Array(outF * r);
    for (let i = 0; i < A.length; i++) A[i] = 0.1 * rand();
    for (let i = 0; i < B.length; i++) B[i] = 0.1 * rand();
    tensors.push([`base_model.model.${mod}.lora_A.weight`, [r, inF], A]);
    tensors.push([`base_model.model.${mod}.lora_B.weight`, [outF, r], B]);
    seen.add(short);
  }
  const missing = targetModules.filter((t) => !seen.has(t));
  if (missing.length) throw new Error(`writeTinyLora: target modules not found in ${options.baseDir}: ${missing.join(', ')}`);

  fs.mkdirSync(dir, { recursive: true });
  writeSafetensorsFile(path.join(dir, 'adapter_model.safetensors'), tensors, 'F32');
  const adapterConfig = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: null,
    bias: 'none',
    fan_in_fan_out: family === 'gpt2',
    inference_mode: true,
    init_lora_weights: false,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: alpha,
    lora_bias: false,
    lora_dropout: 0.0,
    modules_to_save: null,
    peft_type: 'LORA',
    peft_version: '0.21.0',
    r,
    rank_pattern: {},
    revision: null,
    target_modules: [...targetModules],
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: !!options.useRslora,
  };
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(adapterConfig, null, 2));
}

// ---------------------------------------------------------------------------
// reading

/** Converts raw little-endian bytes of a safetensors tensor to f32. */
function toF32(dtype: string, bytes: Uint8Array): Float32Array {
  const copy = new Uint8Array(bytes); // aligned private copy (Buffer#slice would not copy)
  switch (dtype) {
    case 'F32':
      return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
    case 'F16': {
      const u = new Uint16Array(copy.buffer, 0, copy.byteLength / 2);
      const out = new Float32Array(u.length);
      for (let i = 0; i < u.length; i++) out[i] = f16ToF32(u[i]!);
      return out;
    }
    case 'BF16': {
      const u = new Uint16Array(copy.buffer, 0, copy.byteLength / 2);
      const bits = new Uint32Array(u.length);
      for (let i = 0; i < u.length; i++) bits[i] = u[i]! << 16;
      return new Float32Array(bits.buffer);
    }
    default:
      throw new Error(`oracle reader: unsupported dtype ${dtype}`);
  }
}

function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Reads every tensor of one safetensors file as f32 (F32/F16/BF16). Deliberately independent of src/. */
export function loadSafetensorsF32(file: string): OracleWeights {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, any>;
  const out: OracleWeights = new Map();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = e.data_offsets as [number, number];
    const t: OracleTensor = { shape: e.shape, data: toF32(e.dtype, buf.subarray(8 + n + begin, 8 + n + end)) };
    if (t.data.length !== numel(t.shape)) throw new Error(`${file}: ${name} size mismatch`);
    out.set(name, t);
  }
  return out;
}

/** All weights of a checkpoint directory (model.safetensors or sharded via model.safetensors.index.json) as f32. */
export function loadWeightsF32(dir: string): OracleWeights {
  const index = path.join(dir, 'model.safetensors.index.json');
  let files: string[];
  if (fs.existsSync(index)) {
    const weightMap = JSON.parse(fs.readFileSync(index, 'utf8')).weight_map as Record<string, string>;
    files = [...new Set(Object.values(weightMap))].map((f) => path.join(dir, f));
  } else {
    files = [path.join(dir, 'model.safetensors')];
  }
  const out: OracleWeights = new Map();
  for (const f of files) for (const [k, v] of loadSafetensorsF32(f)) out.set(k, v);
  return out;
}

/** Reads a PEFT adapter directory into an OracleLora (module names without the `base_model.model.` prefix). */
export function loadOracleLora(adapterDir: string): OracleLora {
  const cfg = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8'));
  return oracleLoraFromPeft(cfg, loadSafetensorsF32(path.join(adapterDir, 'adapter_model.safetensors')));
}

/** Reads config.json of a checkpoint directory. */
export function readConfig(dir: string): any {
  return JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
}
