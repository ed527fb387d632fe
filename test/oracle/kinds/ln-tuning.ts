/**
 * LN tuning for the oracle, from PEFT's source (peft/tuners/ln_tuning/), and a writer of test
 * adapters in PEFT's on-disk format.
 *
 * layer.py: `update_layer` puts `deepcopy(base_layer)` in `ln_tuning_layers[adapter]`, and
 * `forward` returns `ln_tuning_layers[active_adapter](x)`: the targeted norm runs as a copy of
 * itself (same class, same eps) whose parameters are the adapter's. Loading is
 * `load_state_dict(strict=False)` of keys `base_model.model.<module>.ln_tuning_layers.<param>`
 * (the adapter name dropped by `_remove_adapter_name_from_state_dict_key`), so a parameter the
 * file lacks keeps the copied base value. model.py: target_modules defaults to
 * TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING[model_type] (utils/constants.py).
 * transformers' norms: LlamaRMSNorm / Qwen2RMSNorm  w · x / sqrt(mean(x²) + eps);
 * GPT-2's nn.LayerNorm  w · (x − mean) / sqrt(var + eps) + b.
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeSafetensors } from '../../../src/model/safetensors.js';
import { seededNormal } from '../../../src/model/random.js';
import { loadSafetensorsF32, loadWeightsF32, type TinyFamily } from '../checkpoints.js';
import type { OracleDelta, OracleWeights, Vec } from '../transformer.js';
import { checkTargetModuleExists } from './peft-targets.js';

/** utils/constants.py TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING (the families the oracle runs). */
export const LN_TUNING_DEFAULT_TARGETS: Record<string, string[]> = {
  llama: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  mistral: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  qwen2: ['post_attention_layernorm'],
  gpt2: ['ln_1', 'ln_2', 'ln_f'],
};

const KEY = /^base_model\.model\.(.+)\.ln_tuning_layers\.(weight|bias)$/;

/** The norms of a checkpoint by PEFT module path (1-D `.weight`s), with their base parameters. */
function normModules(base: OracleWeights): Map<string, { weight: Float32Array; bias?: Float32Array }> {
  const norms = new Map<string, { weight: Float32Array; bias?: Float32Array }>();
  for (const [name, t] of base) {
    if (!name.endsWith('.weight') || t.shape.length !== 1) continue;
    const stem = name.replace(/\.weight$/, '');
    const module = /^(h|ln_f)\b/.test(stem) ? `transformer.${stem}` : stem;
    norms.set(module, { weight: t.data, bias: base.get(`${stem}.bias`)?.data });
  }
  return norms;
}

function rmsNorm(x: Vec, w: Vec, eps: number): Vec {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]!);
}

function layerNorm(x: Vec, w: Vec, b: Vec, eps: number): Vec {
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  const variance = x.reduce((s, v) => s + (v - mean) ** 2, 0) / x.length;
  const inv = 1 / Math.sqrt(variance + eps);
  return x.map((v, i) => (v - mean) * inv * w[i]! + b[i]!);
}

/** The OracleDelta of an LN_TUNING adapter directory for a model (config.json) and its base weights. */
export function lnTuningOracle(adapterDir: string, modelConfig: any, base: OracleWeights): OracleDelta {
  const config = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8'));
  const target = config.target_modules ?? LN_TUNING_DEFAULT_TARGETS[modelConfig.model_type];
  const norms = normModules(base);
  // LNTuningConfig has no layers_to_transform / layers_pattern: PEFT drops them when loading.
  const rules = { target_modules: target, exclude_modules: config.exclude_modules };
  const tuned = new Map<string, { weight: Vec; bias?: Vec }>();
  for (const [key, t] of loadSafetensorsF32(path.join(adapterDir, 'adapter_model.safetensors'))) {
    const [, module, param] = KEY.exec(key) ?? [];
    const copy = module === undefined ? undefined : norms.get(module);
    if (!copy || !checkTargetModuleExists(rules, module!)) continue;
    // The deepcopy of the base norm, then the adapter's parameters loaded over it.
    const entry = tuned.get(module!) ?? { weight: Float64Array.from(copy.weight), bias: copy.bias && Float64Array.from(copy.bias) };
    if (param === 'weight') entry.weight = Float64Array.from(t.data);
    else if (entry.bias) entry.bias = Float64Array.from(t.data);
    tuned.set(module!, entry);
  }
  const gpt2 = modelConfig.model_type === 'gpt2';
  const eps: number = gpt2 ? (modelConfig.layer_norm_epsilon ?? 1e-5) : (modelConfig.rms_norm_eps ?? 1e-6);
  return {
    norm(module, x, baseOutput) {
      const copy = tuned.get(module);
      if (!copy) return baseOutput;
      return gpt2 ? layerNorm(x, copy.weight, copy.bias!, eps) : rmsNorm(x, copy.weight, eps);
    },
  };
}

export interface TinyLnTuningOptions {
  baseDir: string;
  seed?: number;
  /** Short names (`input_layernorm`, `ln_f`) written as target_modules; null: PEFT's default for the family. */
  targetModules?: string[] | null;
  /** Std of the change to each weight and bias (default 0.2). */
  scale?: number;
}

/**
 * Writes an LN_TUNING adapter for a tiny checkpoint as PEFT saves one: each targeted norm's
 * weight (and LayerNorm bias) is the base's plus seeded noise. Returns the module paths written.
 */
export function writeTinyLnTuning(dir: string, family: TinyFamily, options: TinyLnTuningOptions): string[] {
  const base = loadWeightsF32(options.baseDir);
  const rand = seededNormal(options.seed ?? 4);
  const scale = options.scale ?? 0.2;
  const targets = options.targetModules ?? LN_TUNING_DEFAULT_TARGETS[family]!;
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  const written: string[] = [];
  for (const [module, norm] of [...normModules(base)].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (!targets.includes(module.split('.').pop()!)) continue;
    const key = `base_model.model.${module}.ln_tuning_layers`;
    tensors[`${key}.weight`] = { dtype: 'F32', shape: [norm.weight.length], data: norm.weight.map((v) => v + scale * rand()) };
    if (norm.bias) tensors[`${key}.bias`] = { dtype: 'F32', shape: [norm.bias.length], data: norm.bias.map((v) => v + scale * rand()) };
    written.push(module);
  }
  if (written.length === 0) throw new Error(`writeTinyLnTuning: no norm matches ${JSON.stringify(targets)}`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  // LNTuningConfig.to_dict(), as save_pretrained writes it (sorted keys; target_modules resolved to the defaults).
  const config = { auto_mapping: null, base_model_name_or_path: null, exclude_modules: null, inference_mode: true, modules_to_save: null, peft_type: 'LN_TUNING', peft_version: '0.21.0', revision: null, target_modules: targets, task_type: 'CAUSAL_LM' };
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  return written;
}

/**
 * The oracle's LN tuning for training checks: from a target_modules field (null: the model type's
 * default) the norms PEFT would wrap, decided by the oracle's own matching (a targeted module
 * that is not a norm throws: the oracle has no rule for it); returns the copies a fresh adapter
 * starts from (LNTuningLayer's deepcopy: the base's weight and bias) by PEFT's names without
 * `base_model.model.`, and a builder of the OracleDelta from trained copies. The builder refuses
 * any other parameter set.
 */
export function lnTuningOracleFromParams(targetModules: string | string[] | null, modelConfig: any, base: OracleWeights): { initial: Map<string, Float32Array>; delta(params: ReadonlyMap<string, Float64Array>): OracleDelta } {
  const target = targetModules ?? LN_TUNING_DEFAULT_TARGETS[modelConfig.model_type]!;
  const norms = normModules(base);
  const initial = new Map<string, Float32Array>();
  for (const [module, norm] of norms) {
    if (!checkTargetModuleExists({ target_modules: target }, module)) continue;
    initial.set(`${module}.ln_tuning_layers.weight`, Float32Array.from(norm.weight));
    if (norm.bias) initial.set(`${module}.ln_tuning_layers.bias`, Float32Array.from(norm.bias));
  }
  const gpt2 = modelConfig.model_type === 'gpt2';
  const eps: number = gpt2 ? (modelConfig.layer_norm_epsilon ?? 1e-5) : (modelConfig.rms_norm_eps ?? 1e-6);
  const delta = (params: ReadonlyMap<string, Float64Array>): OracleDelta => {
    for (const [name, v] of initial) if (params.get(name)?.length !== v.length) throw new Error(`oracle: ${name} needs ${v.length} values`);
    if (params.size !== initial.size) throw new Error(`oracle: ${params.size} parameters for ${initial.size} norm tensors`);
    return {
      norm(module, x, baseOutput) {
        const weight = params.get(`${module}.ln_tuning_layers.weight`);
        if (!weight) return baseOutput;
        return gpt2 ? layerNorm(x, weight, params.get(`${module}.ln_tuning_layers.bias`)!, eps) : rmsNorm(x, weight, eps);
      },
    };
  };
  return { initial, delta };
}
