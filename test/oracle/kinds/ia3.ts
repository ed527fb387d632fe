/**
 * (IA)³ as PEFT computes it, for the oracle, and a writer of tiny IA3 adapters in PEFT's on-disk
 * format. Written from PEFT's source (src/peft/tuners/ia3/{config,model,layer}.py,
 * tuners/tuners_utils.py, utils/constants.py), never from deltaserve's lowering:
 *
 * - which modules get an IA3 layer: `check_target_module_exists` (exclude_modules first; a string
 *   target full-matches, 'all-linear' means every Linear/Conv1D but the output head; a list
 *   matches a module named exactly so or ending in `.name`), with the model type's defaults when
 *   target_modules is null;
 * - which of them are feed-forward: `IA3Model._check_target_module_feedforward` (a string
 *   full-matches; a list matches any key that `endswith(name)`, with no dot boundary);
 * - the vector: `ia3_l` is [1, in] for a feed-forward module, else [out, 1] (`update_layer`);
 *   `Linear.forward` multiplies the input by it before the base layer when feed-forward, else
 *   the base layer's whole output (bias included);
 * - loading: `load_state_dict(strict=False)` ignores keys of modules without an IA3 layer and
 *   refuses a shape that differs from the layer's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeSafetensors } from '../../../src/model/safetensors.js';
import { seededNormal } from '../../../src/model/random.js';
import { loadSafetensorsF32, loadWeightsF32, readConfig } from '../checkpoints.js';
import type { OracleDelta, Vec } from '../transformer.js';

/** utils/constants.py, TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING / ..._FEEDFORWARD_MODULES_MAPPING. */
const TARGETS: Record<string, string[]> = { llama: ['k_proj', 'v_proj', 'down_proj'], mistral: ['k_proj', 'v_proj', 'down_proj'], qwen2: ['q_proj', 'v_proj', 'down_proj'], gpt2: ['c_attn', 'mlp.c_proj'] };
const FEEDFORWARD: Record<string, string[]> = { llama: ['down_proj'], mistral: ['down_proj'], qwen2: ['down_proj'], gpt2: ['mlp.c_proj'] };

type Field = string | string[] | null | undefined;

/** A linear module of the base model: its path as `named_modules()` lists it, and its features. */
interface LinearModule {
  path: string;
  inFeatures: number;
  outFeatures: number;
}

const fullMatch = (pattern: string, key: string) => new RegExp(`^(?:${pattern})$`).test(key);

/** The base model's nn.Linear / Conv1D modules, read from its checkpoint (lm_head included, tied or not). */
function linearModules(baseDir: string): { modelType: string; modules: LinearModule[] } {
  const config = readConfig(baseDir);
  const gpt2 = config.model_type === 'gpt2';
  const modules: LinearModule[] = [];
  for (const [name, t] of loadWeightsF32(baseDir)) {
    if (!name.endsWith('.weight') || t.shape.length !== 2 || /embed_tokens|wte|wpe/.test(name)) continue;
    const mod = name.slice(0, -'.weight'.length);
    // Conv1D (GPT-2) stores [in, out]; nn.Linear [out, in]. GPT2LMHeadModel names modules under `transformer.`.
    if (gpt2 && mod !== 'lm_head') modules.push({ path: mod.startsWith('transformer.') ? mod : `transformer.${mod}`, inFeatures: t.shape[0]!, outFeatures: t.shape[1]! });
    else modules.push({ path: mod, inFeatures: t.shape[1]!, outFeatures: t.shape[0]! });
  }
  if (!modules.some((m) => m.path === 'lm_head')) modules.push({ path: 'lm_head', inFeatures: gpt2 ? config.n_embd : config.hidden_size, outFeatures: config.vocab_size });
  return { modelType: config.model_type, modules };
}

/** tuners_utils.py `check_target_module_exists`, after `_maybe_include_all_linear_layers`, for IA3Config's fields. */
function targeted(config: any, modelType: string, modules: LinearModule[], key: string): boolean {
  const exclude: Field = config.exclude_modules;
  if (exclude) {
    if (typeof exclude === 'string' ? fullMatch(exclude, key) : exclude.includes(key) || exclude.some((e) => key.endsWith(`.${e}`))) return false;
  }
  let target: Field = config.target_modules ?? TARGETS[modelType];
  if (typeof target === 'string' && target.toLowerCase() === 'all-linear') target = modules.filter((m) => m.path !== 'lm_head').map((m) => m.path);
  if (typeof target === 'string') return fullMatch(target, key);
  if (!target) throw new Error(`no IA3 target modules for ${modelType}`);
  return target.includes(key) || target.some((t) => key.endsWith(`.${t}`));
}

/** model.py `_check_target_module_feedforward`. */
function feedforward(config: any, modelType: string, key: string): boolean {
  const ff: Field = config.feedforward_modules ?? FEEDFORWARD[modelType];
  if (typeof ff === 'string') return fullMatch(ff, key);
  return (ff ?? []).some((t) => key.endsWith(t));
}

/** The IA3 layers PEFT would create: module, feed-forward or not, and ia3_l's shape. */
function ia3Layers(config: any, baseDir: string): { module: LinearModule; feedforward: boolean; shape: number[] }[] {
  const { modelType, modules } = linearModules(baseDir);
  return modules
    .filter((m) => targeted(config, modelType, modules, m.path))
    .map((m) => {
      const ff = feedforward(config, modelType, m.path);
      return { module: m, feedforward: ff, shape: ff ? [1, m.inFeatures] : [m.outFeatures, 1] };
    });
}

/**
 * The oracle's view of an IA3 adapter directory: a delta that scales each IA3 layer's input or
 * output by its `ia3_l` (flattened, as `Linear.forward` does), in float64.
 */
export function loadOracleIa3(adapterDir: string, baseDir: string): OracleDelta {
  const config = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8'));
  const tensors = loadSafetensorsF32(path.join(adapterDir, 'adapter_model.safetensors'));
  const inputs = new Map<string, Vec>();
  const outputs = new Map<string, Vec>();
  for (const layer of ia3Layers(config, baseDir)) {
    const t = tensors.get(`base_model.model.${layer.module.path}.ia3_l`);
    if (!t) {
      if (config.init_ia3_weights === false) throw new Error(`oracle: ${layer.module.path} would keep a random ia3_l`);
      continue; // reset_ia3_parameters: ones
    }
    if (t.shape.join() !== layer.shape.join()) throw new Error(`oracle: ${layer.module.path} ia3_l [${t.shape}] vs the layer's [${layer.shape}] (load_state_dict refuses)`);
    (layer.feedforward ? inputs : outputs).set(layer.module.path, Float64Array.from(t.data));
  }
  const scale = (v: Vec, s: Vec | undefined) => (s ? v.map((value, i) => value * s[i]!) : v);
  return {
    projectionInput: (module, x) => scale(x, inputs.get(module)),
    projectionOutput: (module, _x, y) => scale(y, outputs.get(module)),
  };
}

export interface TinyIa3Options {
  /** The base checkpoint directory (written by writeTinyCheckpoint). */
  baseDir: string;
  seed?: number;
  /** PEFT's target_modules / feedforward_modules (null: the model type's defaults). */
  targetModules?: string[] | string | null;
  feedforwardModules?: string[] | string | null;
  /** Further adapter_config.json fields (override the defaults written). */
  config?: Record<string, unknown>;
}

/**
 * Writes a PEFT IA3 adapter (adapter_config.json as IA3Config.save_pretrained writes it +
 * adapter_model.safetensors, F32) for the base checkpoint: every IA3 layer PEFT would create
 * gets an ia3_l of its shape with values 1 + 0.3·N(0, 1), so each visibly changes the model.
 */
export function writeTinyIa3(dir: string, options: TinyIa3Options): { modules: number; feedforward: number } {
  const modelType = readConfig(options.baseDir).model_type;
  const config = {
    auto_mapping: null,
    base_model_name_or_path: null,
    exclude_modules: null,
    fan_in_fan_out: modelType === 'gpt2',
    feedforward_modules: options.feedforwardModules ?? null,
    inference_mode: true,
    init_ia3_weights: true,
    modules_to_save: null,
    peft_type: 'IA3',
    peft_version: '0.21.0',
    revision: null,
    target_modules: options.targetModules ?? null,
    task_type: 'CAUSAL_LM',
    ...options.config,
  };
  const rand = seededNormal(options.seed ?? 1);
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  const layers = ia3Layers(config, options.baseDir);
  for (const layer of layers) {
    const data = Float32Array.from({ length: layer.shape[0]! * layer.shape[1]! }, () => 1 + 0.3 * rand());
    tensors[`base_model.model.${layer.module.path}.ia3_l`] = { dtype: 'F32', shape: layer.shape, data };
  }
  if (layers.length === 0) throw new Error(`writeTinyIa3: no module of ${options.baseDir} is targeted`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  return { modules: layers.length, feedforward: layers.filter((l) => l.feedforward).length };
}

/**
 * The oracle's IA3 for training checks: from an IA3Config's fields (null target/feedforward
 * modules: the model type's defaults, as `_prepare_adapter_config` fills them) the IA3 layers PEFT
 * would create, decided here from PEFT's rules and not from deltaserve's; returns a builder of the
 * OracleDelta from trained vectors by PEFT's names without `base_model.model.` (`<module>.ia3_l`).
 * The builder refuses parameters that are not exactly those layers' vectors in PEFT's shapes.
 */
export function ia3OracleFromParams(config: { target_modules?: Field; feedforward_modules?: Field; exclude_modules?: Field }, baseDir: string): (params: ReadonlyMap<string, Float64Array>) => OracleDelta {
  const layers = ia3Layers(config, baseDir);
  return (params) => {
    const inputs = new Map<string, Vec>();
    const outputs = new Map<string, Vec>();
    for (const layer of layers) {
      const v = params.get(`${layer.module.path}.ia3_l`);
      if (!v || v.length !== layer.shape[0]! * layer.shape[1]!) throw new Error(`oracle: ${layer.module.path} needs an ia3_l of shape [${layer.shape}], got ${v?.length ?? 'none'} values`);
      (layer.feedforward ? inputs : outputs).set(layer.module.path, v);
    }
    if (params.size !== layers.length) throw new Error(`oracle: ${params.size} parameters for ${layers.length} IA3 layers (${[...params.keys()].join(', ')})`);
    const scale = (v: Vec, s: Vec | undefined) => (s ? v.map((value, i) => value * s[i]!) : v);
    return { projectionInput: (module, x) => scale(x, inputs.get(module)), projectionOutput: (module, _x, y) => scale(y, outputs.get(module)) };
  };
}

/** IA3 layers PEFT would create for the config, with their shapes (for tests that check a trainer's parameter list). */
export function peftIa3Layers(config: { target_modules?: Field; feedforward_modules?: Field }, baseDir: string): { path: string; feedforward: boolean; shape: number[] }[] {
  return ia3Layers(config, baseDir).map((l) => ({ path: l.module.path, feedforward: l.feedforward, shape: l.shape }));
}
