/**
 * Writes tiny AdapterHub bottleneck adapters the way `model.save_adapter(dir, name,
 * use_safetensors=True)` lays them out (loading.py AdapterLoader.save, build_full_config):
 * adapter_config.json (sorted keys, the full BnConfig under `config`) and adapter.safetensors with
 * `<model prefix>.<layer>.<attention_adapters|output_adapters>.adapters.<name>.<param>` keys.
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeSafetensors } from '../../../src/model/safetensors.js';
import { seededNormal } from '../../../src/model/random.js';
import { readConfig } from '../checkpoints.js';
import { PRESETS } from './bottleneck.js';

/** BnConfig as asdict() writes it: every field (adapter_config.py), over which a test sets its own. */
const BN_FIELDS = {
  adapter_residual_before_ln: false, cross_adapter: false, dropout: 0.0, factorized_phm_W: true, factorized_phm_rule: false, hypercomplex_nonlinearity: 'glorot-uniform',
  init_weights: 'bert', init_weights_seed: null, inv_adapter: null, inv_adapter_reduction_factor: null, is_parallel: false, learn_phm: true, leave_out: [],
  ln_after: false, ln_before: false, original_ln_after: true, original_ln_before: false, phm_bias: true, phm_c_init: 'normal', phm_dim: 4, phm_init_range: 0.0001,
  phm_layer: false, phm_rank: 1, residual_before_ln: true, scaling: 1.0, shared_W_phm: false, shared_phm_rule: true, stochastic_depth: 0.0, use_gating: false,
};

export interface TinyBottleneckOptions {
  /** The base checkpoint directory (writeTinyCheckpoint or the fixture); shapes and names follow it. */
  baseDir: string;
  /** A preset name ('seq_bn', 'double_seq_bn', 'par_bn', ...) or fields over it. */
  preset?: string;
  config?: Record<string, unknown>;
  /** Writes `config` as the bare preset name instead of the expanded dict. */
  presetName?: boolean;
  name?: string;
  seed?: number;
  /** Standard deviation of the projections' weights and biases. */
  std?: number;
  /** Keys without the model's base prefix (a base model saved directly: `layers.0…`, `h.0…`). */
  bareKeys?: boolean;
  /** null: no `version` (a pre-`adapters` file, whose activation names are renamed on load). */
  version?: string | null;
}

type Tensors = Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>;

/** Writes the adapter and returns its resolved BnConfig dict. */
export function writeTinyBottleneck(dir: string, options: TinyBottleneckOptions): Record<string, any> {
  const base = readConfig(options.baseDir);
  const family: string = base.model_type;
  const hidden: number = base.hidden_size ?? base.n_embd;
  const name = options.name ?? 'tiny';
  const config: Record<string, any> = { ...BN_FIELDS, ...PRESETS[options.preset ?? 'seq_bn'], ...options.config };
  const prefix = family === 'gpt2' ? (options.bareKeys ? 'h' : 'transformer.h') : options.bareKeys ? 'layers' : 'model.layers';
  const rand = seededNormal(options.seed ?? 3);
  const tensors: Tensors = {};
  for (let layer = 0; layer < (base.num_hidden_layers ?? base.n_layer); layer++) {
    if ((config['leave_out'] as number[]).includes(layer)) continue;
    for (const [flag, module] of [['mh_adapter', 'attention_adapters'], ['output_adapter', 'output_adapters']] as const) {
      if (!config[flag]) continue;
      let factor = config['reduction_factor'];
      if (typeof factor === 'object') factor = factor[String(layer)] ?? factor['default'];
      addModule(tensors, `${prefix}.${layer}.${module}.adapters.${name}`, config, { hidden, width: Math.max(1, Math.floor(hidden / factor)), std: options.std ?? 0.3, rand });
    }
  }
  const file: Record<string, unknown> = {
    config: options.presetName ? options.preset : config,
    hidden_size: hidden,
    model_class: family === 'gpt2' ? 'GPT2LMHeadModel' : 'LlamaForCausalLM',
    model_name: null,
    model_type: family,
    name,
    ...(options.version === null ? {} : { version: options.version ?? 'adapters.1.2.0' }),
  };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(sortKeys(file), null, 2));
  fs.writeFileSync(path.join(dir, 'adapter.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  return config;
}

/** One Adapter module's state_dict entries under `at`. */
function addModule(tensors: Tensors, at: string, config: Record<string, any>, o: { hidden: number; width: number; std: number; rand: () => number }): void {
  const { hidden, width, std, rand } = o;
  const put = (key: string, shape: number[], make: () => number) => (tensors[`${at}.${key}`] = { dtype: 'F32', shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, make) });
  const down = config['ln_before'] ? 'adapter_down.1' : 'adapter_down.0';
  put(`${down}.weight`, [width, hidden], () => std * rand());
  put(`${down}.bias`, [width], () => std * rand());
  put('adapter_up.weight', [hidden, width], () => std * rand());
  put('adapter_up.bias', [hidden], () => std * rand());
  if (config['ln_before']) {
    put('adapter_norm_before.weight', [hidden], () => 1 + 0.2 * rand());
    put('adapter_norm_before.bias', [hidden], () => 0.2 * rand());
    // One LayerNorm registered twice: state_dict() lists it under both names.
    tensors[`${at}.adapter_down.0.weight`] = tensors[`${at}.adapter_norm_before.weight`]!;
    tensors[`${at}.adapter_down.0.bias`] = tensors[`${at}.adapter_norm_before.bias`]!;
  }
  if (config['ln_after']) {
    put('adapter_norm_after.weight', [hidden], () => 1 + 0.2 * rand());
    put('adapter_norm_after.bias', [hidden], () => 0.2 * rand());
  }
  if (config['scaling'] === 'learned') put('scaling', [1], () => 1 + 0.5 * rand());
  if (config['scaling'] === 'channel') put('scaling', [hidden], () => 1 + 0.5 * rand());
}

/** json.dump(sort_keys=True), as save_weights_config writes it. */
function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]));
}
