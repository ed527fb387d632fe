/**
 * LoRA weights <-> PEFT adapter files, for training: `encodePeftLora` writes what PEFT 0.21's
 * `save_pretrained` writes (so `PeftModel.from_pretrained` and this server's `parsePeftLora` load
 * it), and `loraWeightsFromPeft` reads an adapter back as raw A/B to continue training from it.
 */
import type { ArchitectureSpec } from '../model/architecture.js';
import { allProjections } from '../model/architecture.js';
import { encodeSafetensors } from '../model/safetensors.js';
import { parsePeftLora, type PeftLoraConfig } from './peft-lora.js';

/** One module's LoRA factors in PEFT layout, unscaled: delta W = (alpha / r) * B @ A. */
export interface LoraModuleWeights {
  /** [r, in] */
  a: Float32Array;
  /** [out, r] */
  b: Float32Array;
  inFeatures: number;
  outFeatures: number;
}

/** A whole LoRA adapter: one rank and alpha for every module, keyed by module path. */
export interface LoraWeights {
  r: number;
  alpha: number;
  useRslora: boolean;
  /** PEFT target_modules, e.g. ['q_proj', 'v_proj']. */
  targetModules: string[];
  baseModel?: string;
  /**
   * PEFT's flag for Conv1D backbones (GPT-2), whose base weights are stored [in, out]; the LoRA
   * factors keep their usual [r, in] / [out, r] layout either way.
   */
  fanInFanOut?: boolean;
  /** Module path (e.g. 'model.layers.0.self_attn.q_proj') -> factors. */
  modules: Map<string, LoraModuleWeights>;
}

const KEY_PREFIX = 'base_model.model.';

/**
 * The two files of a PEFT adapter directory: adapter_config.json text and
 * adapter_model.safetensors bytes (F32, keys `base_model.model.<path>.lora_A/B.weight`).
 *
 * @example
 * const { config, weights } = encodePeftLora(trained);
 * fs.writeFileSync(path.join(dir, 'adapter_config.json'), config);
 * fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), weights);
 */
export function encodePeftLora(weights: LoraWeights): { config: string; weights: Uint8Array } {
  checkHyperparameters(weights);
  const tensors: Parameters<typeof encodeSafetensors>[0] = {};
  for (const [modulePath, m] of weights.modules) {
    checkModule(modulePath, m, weights.r);
    tensors[`${KEY_PREFIX}${modulePath}.lora_A.weight`] = { dtype: 'F32', shape: [weights.r, m.inFeatures], data: m.a };
    tensors[`${KEY_PREFIX}${modulePath}.lora_B.weight`] = { dtype: 'F32', shape: [m.outFeatures, weights.r], data: m.b };
  }
  // encodeSafetensors orders keys by dtype then name; all F32 here, so by name, as PEFT's file is.
  return { config: configText(weights), weights: encodeSafetensors(tensors, { format: 'pt' }) };
}

function checkHyperparameters({ r, alpha, modules, targetModules }: LoraWeights): void {
  if (!Number.isInteger(r) || r <= 0) throw new RangeError(`LoRA rank r must be a positive integer, got ${r}`);
  if (!Number.isFinite(alpha)) throw new RangeError(`lora_alpha must be a finite number, got ${alpha}`);
  if (modules.size === 0) throw new RangeError('a LoRA adapter needs at least one module');
  if (targetModules.length === 0) throw new RangeError('target_modules must not be empty');
}

function checkModule(modulePath: string, m: LoraModuleWeights, r: number): void {
  if (m.a.length !== r * m.inFeatures) throw new RangeError(`${modulePath}: lora_A has ${m.a.length} values, expected r * in = ${r} * ${m.inFeatures}`);
  if (m.b.length !== m.outFeatures * r) throw new RangeError(`${modulePath}: lora_B has ${m.b.length} values, expected out * r = ${m.outFeatures} * ${r}`);
}

/**
 * PEFT writes its config with `json.dump(indent=2, sort_keys=True)`; the same layout keeps
 * diffs against PEFT-made adapters small. Fields left out take LoraConfig's defaults on load.
 */
function configText(w: LoraWeights): string {
  const config: Record<string, unknown> = {
    alpha_pattern: {},
    base_model_name_or_path: w.baseModel ?? null,
    bias: 'none',
    fan_in_fan_out: w.fanInFanOut ?? false,
    inference_mode: true,
    init_lora_weights: true,
    lora_alpha: w.alpha,
    lora_dropout: 0,
    modules_to_save: null,
    peft_type: 'LORA',
    r: w.r,
    rank_pattern: {},
    target_modules: [...new Set(w.targetModules)].sort(),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: w.useRslora,
  };
  return JSON.stringify(config, null, 2);
}

/**
 * Reads a PEFT LoRA adapter (F32, F16 or BF16) as raw, unscaled factors, validated against the
 * backbone by `parsePeftLora`. Features `LoraWeights` cannot hold (per-module rank or alpha,
 * DoRA, trained biases, saved modules) are rejected, because
 * dropping them would silently change the adapter. A string (regex) target_modules becomes the
 * list of projection names the adapter actually holds.
 *
 * @example
 * const weights = loraWeightsFromPeft(fs.readFileSync(cfg, 'utf8'), fs.readFileSync(st), ckpt.arch);
 * weights.modules.get('model.layers.0.self_attn.q_proj')!.a; // Float32Array [r * in]
 */
export function loraWeightsFromPeft(configText: string, weightBytes: Uint8Array, arch: ArchitectureSpec): LoraWeights {
  const config = parseConfig(configText);
  const delta = parsePeftLora('adapter', configText, weightBytes, arch, config.r);
  const projections = new Map(allProjections(arch).flat().map((p) => [p.modulePath, p]));
  const modules = new Map<string, LoraModuleWeights>();
  for (const modulePath of [...delta.modules.keys()].sort()) {
    const { a, b } = delta.modules.get(modulePath)!;
    const { inFeatures, outFeatures } = projections.get(modulePath)!;
    modules.set(modulePath, { a, b, inFeatures, outFeatures });
  }
  const targetModules = Array.isArray(config.target_modules)
    ? [...config.target_modules].sort()
    : [...new Set([...modules.keys()].map((p) => projections.get(p)!.name))].sort();
  const weights: LoraWeights = {
    r: config.r,
    alpha: config.lora_alpha ?? 8, // LoraConfig's default
    useRslora: config.use_rslora === true,
    targetModules,
    modules,
  };
  if (config.fan_in_fan_out) weights.fanInFanOut = true;
  const base = (config as { base_model_name_or_path?: unknown }).base_model_name_or_path;
  if (typeof base === 'string') weights.baseModel = base;
  return weights;
}

/** Parses the config and refuses what LoraWeights cannot represent, naming every such field. */
function parseConfig(text: string): PeftLoraConfig {
  let config: PeftLoraConfig;
  try {
    config = JSON.parse(text);
  } catch (err) {
    throw new Error(`adapter_config.json is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new Error('adapter_config.json must be a JSON object');
  const problems: string[] = [];
  if (config.peft_type !== 'LORA') problems.push(`peft_type ${JSON.stringify(config.peft_type)} (only LORA)`);
  if (!Number.isInteger(config.r) || config.r <= 0) problems.push(`r ${JSON.stringify(config.r)} (a positive integer is required)`);
  if (config.lora_alpha !== undefined && !Number.isFinite(config.lora_alpha)) problems.push(`lora_alpha ${JSON.stringify(config.lora_alpha)}`);
  if (config.rank_pattern && Object.keys(config.rank_pattern).length) problems.push('rank_pattern (per-module ranks)');
  if (config.alpha_pattern && Object.keys(config.alpha_pattern).length) problems.push('alpha_pattern (per-module alphas)');
  if (config.use_dora) problems.push('use_dora (DoRA magnitudes)');
  if (config.bias && config.bias !== 'none') problems.push(`bias ${JSON.stringify(config.bias)} (only "none")`);
  if (config.modules_to_save?.length) problems.push('modules_to_save (fully trained modules)');
  if (problems.length) throw new Error(`adapter cannot be loaded for training: unsupported ${problems.join('; ')}`);
  return config;
}
