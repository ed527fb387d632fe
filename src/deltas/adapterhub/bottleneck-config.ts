/**
 * The adapter_config.json of an AdapterHub (`adapters` library) bottleneck adapter, read as the
 * library reads it (configuration/adapter_config.py BnConfig; loading.py
 * WeightsLoaderHelper.load_weights_config), type- and range-checking every field and refusing,
 * by name, every option that changes the numbers and that deltaserve does not compute exactly.
 *
 * The file `model.save_adapter()` writes is
 *   { "config": { ...BnConfig fields... }, "hidden_size": 64, "model_class": "...",
 *     "model_name": "...", "model_type": "llama", "name": "<adapter name>", "version": "adapters.1.2.0" }
 * `config` may also be one of the library's preset names for bottleneck adapters ("seq_bn", ...).
 */
import type { ArchitectureSpec } from '../../model/architecture.js';
import { ConfigFields, show, type JsonObject } from '../peft/config-fields.js';

/** The nonlinearities served, by the function they compute (see ACTIVATIONS). */
export type Activation = 'relu' | 'gelu' | 'gelu_tanh' | 'silu' | 'tanh' | 'sigmoid' | 'quick_gelu' | 'leaky_relu' | 'identity';

/**
 * `non_linearity` (lower-cased, as methods/modeling.py Activation_Function_Class does) → what it
 * computes: transformers' ACT2FN, plus the library's own "leakyrelu" (F.leaky_relu, slope 0.01).
 */
export const ACTIVATIONS: Readonly<Record<string, Activation>> = {
  relu: 'relu',
  gelu: 'gelu',
  gelu_python: 'gelu',
  gelu_new: 'gelu_tanh',
  gelu_fast: 'gelu_tanh',
  gelu_pytorch_tanh: 'gelu_tanh',
  silu: 'silu',
  swish: 'silu',
  tanh: 'tanh',
  sigmoid: 'sigmoid',
  quick_gelu: 'quick_gelu',
  leakyrelu: 'leaky_relu',
  linear: 'identity',
};

/** The settings deltaserve applies, per adapter (every location uses the same). */
export interface BottleneckSettings {
  name: string | undefined;
  mhAdapter: boolean;
  outputAdapter: boolean;
  /** Bottleneck width per layer: hidden_size // reduction_factor (at least 1); undefined where the mapping has no entry. */
  width: (layer: number) => number | undefined;
  /** The reduction factor in the message when a layer has none. */
  reductionFactor: (layer: number) => string;
  leaveOut: Set<number>;
  activation: Activation;
  activationName: string;
  originalLnBefore: boolean;
  originalLnAfter: boolean;
  residualBeforeLn: boolean;
  lnBefore: boolean;
  lnAfter: boolean;
  adapterResidualBeforeLn: boolean;
  parallel: boolean;
  scaling: number | 'learned' | 'channel';
  warnings: string[];
}

/** The largest |scaling| accepted (the library sets none; ours keeps scaled outputs inside float32). */
export const MAX_SCALING = 1e6;

const SEQ_BN: JsonObject = { original_ln_before: true, original_ln_after: true, residual_before_ln: true, mh_adapter: false, output_adapter: true, non_linearity: 'relu', reduction_factor: 16 };
const DOUBLE_SEQ_BN: JsonObject = { original_ln_before: false, original_ln_after: true, residual_before_ln: true, mh_adapter: true, output_adapter: true, non_linearity: 'swish', reduction_factor: 16 };
const PAR_BN: JsonObject = { mh_adapter: false, output_adapter: true, non_linearity: 'relu', reduction_factor: 2, init_weights: 'mam_adapter', is_parallel: true, scaling: 4.0 };

/** ADAPTER_CONFIG_MAP's bottleneck presets without invertible adapters or PHM layers (adapter_config.py). */
export const BOTTLENECK_PRESETS: Readonly<Record<string, JsonObject>> = {
  seq_bn: SEQ_BN,
  pfeiffer: SEQ_BN,
  double_seq_bn: DOUBLE_SEQ_BN,
  houlsby: DOUBLE_SEQ_BN,
  par_bn: PAR_BN,
  parallel: PAR_BN,
  scaled_par_bn: { ...PAR_BN, scaling: 'learned' },
  scaled_parallel: { ...PAR_BN, scaling: 'learned' },
};

/**
 * Whether an adapter_config.json is an AdapterHub bottleneck adapter's: no peft_type, and under
 * `config` a BnConfig (architecture absent, null or 'bottleneck', with any of its required
 * fields, so that one lacking the others is told which) or a bottleneck preset's name.
 *
 * @example isBottleneckConfig({ config: 'seq_bn', name: 'sst2' }) // true
 */
export function isBottleneckConfig(config: JsonObject): boolean {
  if (config['peft_type'] !== undefined) return false;
  const inner = config['config'];
  if (typeof inner === 'string') return inner in BOTTLENECK_PRESETS;
  if (typeof inner !== 'object' || inner === null || Array.isArray(inner)) return false;
  const architecture = (inner as JsonObject)['architecture'];
  return (architecture === undefined || architecture === null || architecture === 'bottleneck') && REQUIRED_FIELDS.some((f) => f in inner);
}

/** BnConfig's fields without a default. */
const REQUIRED_FIELDS = ['mh_adapter', 'output_adapter', 'reduction_factor', 'non_linearity'];

/**
 * Reads and checks the whole file; problems (each naming its field) go to `problems`.
 *
 * @example readBottleneckConfig({ config: 'seq_bn', name: 'sst2' }, arch, problems).outputAdapter // true
 */
export function readBottleneckConfig(raw: JsonObject, arch: ArchitectureSpec, problems: string[]): BottleneckSettings {
  const top = new ConfigFields(raw);
  const warnings: string[] = [];
  const name = readTopLevel(top, arch, warnings);
  const preset = typeof raw['config'] === 'string' ? BOTTLENECK_PRESETS[raw['config']] : undefined;
  const inner = preset ?? (raw['config'] as JsonObject);
  const fields = new ConfigFields(inner);
  if (!preset) for (const field of REQUIRED_FIELDS) if (!fields.has(field)) fields.problems.push(`${field} is required (BnConfig has no default for it)`);
  const settings = readBnFields(fields, arch, raw['version'] === undefined);
  for (const key of Object.keys(inner)) if (!KNOWN_FIELDS.has(key)) warnings.push(`adapter_config.json: config.${key.slice(0, 60)} is not a BnConfig field; ignored (the adapters library ignores it too)`);
  problems.push(...top.problems.map((p) => `adapter_config.json: ${p}`), ...fields.problems.map((p) => `adapter_config.json: config.${p}`));
  return { ...settings, name, warnings };
}

/** The fields around `config`: the adapter's name, and the model it was trained for. */
function readTopLevel(top: ConfigFields, arch: ArchitectureSpec, warnings: string[]): string | undefined {
  const name = optionalString(top, 'name', 256);
  for (const field of ['version', 'model_type', 'model_name', 'model_class', 'type']) optionalString(top, field, 256);
  const hidden = top.number('hidden_size', { fallback: arch.hiddenSize, integer: true, min: 1 });
  if (hidden !== arch.hiddenSize) top.problems.push(`hidden_size ${hidden} differs from the backbone's ${arch.hiddenSize}`);
  const modelType = top.config['model_type'];
  if (typeof modelType === 'string' && modelType !== arch.family) warnings.push(`adapter_config.json: model_type '${modelType.slice(0, 40)}' is not the backbone's '${arch.family}'; served since every shape matches`);
  return name;
}

function readBnFields(fields: ConfigFields, arch: ArchitectureSpec, legacy: boolean): Omit<BottleneckSettings, 'name' | 'warnings'> {
  const mhAdapter = fields.boolean('mh_adapter', false);
  const outputAdapter = fields.boolean('output_adapter', false);
  const { width, reductionFactor } = readReductionFactor(fields, arch.hiddenSize);
  const leaveOut = readLeaveOut(fields);
  const { activation, activationName } = readActivation(fields, legacy);
  const parallel = fields.boolean('is_parallel', false);
  const residual = fields.config['residual_before_ln'];
  if (residual === 'post_add') fields.problems.push(`residual_before_ln 'post_add' is not supported: the adapters library fails on ${arch.family} with it (its adapter layers get no layer norm, so no residual is ever taken)`);
  else if (residual !== undefined && residual !== null && typeof residual !== 'boolean') fields.problems.push(`residual_before_ln must be true, false or 'post_add', got ${show(residual)}`);
  const originalLnAfter = fields.boolean('original_ln_after', true);
  // models/* hook adapters in with layer_norm=None; qwen2 has no native support, and the hooked
  // layers of its plugin interface (methods/bottleneck.py LAYER_HOOK_UNSUPPORTED) refuse this.
  if (!originalLnAfter && arch.family === 'qwen2') fields.problems.push('original_ln_after false is not supported on qwen2: the adapters library hooks adapters into qwen2 layers, where it refuses original_ln_after=False');
  checkUnservable(fields);
  checkInertFields(fields);
  return {
    mhAdapter, outputAdapter, width, reductionFactor, leaveOut, activation, activationName, parallel, originalLnAfter,
    originalLnBefore: fields.boolean('original_ln_before', false),
    // pre_forward takes the residual before adding the block's input only when this is `True`.
    residualBeforeLn: residual !== false,
    lnBefore: fields.boolean('ln_before', false),
    lnAfter: fields.boolean('ln_after', false),
    adapterResidualBeforeLn: fields.boolean('adapter_residual_before_ln', false),
    scaling: readScaling(fields),
  };
}

/** Options whose numbers deltaserve does not compute, refused by name. */
function checkUnservable(fields: ConfigFields): void {
  if (fields.boolean('use_gating', false)) fields.problems.push('use_gating true is not supported: the gate is the mean of sigmoid(gate(x)) over the whole sequence (modeling.py Adapter.forward), so a token would depend on later tokens and on how a prompt is split into passes');
  if (fields.boolean('phm_layer', false)) fields.problems.push('phm_layer true is not supported (PHM/Compacter down- and up-projections)');
  const inv = fields.config['inv_adapter'];
  if (inv !== undefined && inv !== null) fields.problems.push(`inv_adapter ${show(inv)} is not supported (invertible adapters change the embeddings and the output head); only null`);
}

/** Fields that do not change inference (training, initialisation, other architectures): type-checked only. */
function checkInertFields(fields: ConfigFields): void {
  fields.number('dropout', { fallback: 0, min: 0, max: 1 });
  fields.number('stochastic_depth', { fallback: 0, min: 0, max: 1 });
  fields.oneOf('init_weights', ['bert', 'mam_adapter', 'houlsby'], 'bert');
  fields.number('init_weights_seed', { fallback: 0, integer: true });
  fields.boolean('cross_adapter', false);
  fields.number('inv_adapter_reduction_factor', { fallback: 1, above: 0 });
  fields.number('phm_dim', { fallback: 4, integer: true, min: 1 });
  fields.number('phm_rank', { fallback: 1, integer: true, min: 1 });
  fields.number('phm_init_range', { fallback: 0.0001 });
  for (const field of ['factorized_phm_W', 'shared_W_phm', 'shared_phm_rule', 'factorized_phm_rule', 'learn_phm', 'phm_bias']) fields.boolean(field, false);
  for (const field of ['phm_c_init', 'hypercomplex_nonlinearity']) optionalString(fields, field, 64);
  const architecture = fields.config['architecture'];
  if (architecture !== undefined && architecture !== null && architecture !== 'bottleneck') fields.problems.push(`architecture must be null or 'bottleneck', got ${show(architecture)}`);
}

const KNOWN_FIELDS = new Set([
  'architecture', 'mh_adapter', 'output_adapter', 'reduction_factor', 'non_linearity', 'original_ln_before', 'original_ln_after', 'ln_before', 'ln_after',
  'init_weights', 'init_weights_seed', 'is_parallel', 'scaling', 'use_gating', 'residual_before_ln', 'adapter_residual_before_ln', 'inv_adapter',
  'inv_adapter_reduction_factor', 'cross_adapter', 'leave_out', 'dropout', 'phm_layer', 'phm_dim', 'factorized_phm_W', 'shared_W_phm', 'shared_phm_rule',
  'factorized_phm_rule', 'phm_c_init', 'phm_init_range', 'learn_phm', 'hypercomplex_nonlinearity', 'phm_rank', 'phm_bias', 'stochastic_depth',
]);

/**
 * `non_linearity`, renamed as load_weights_config renames it in files without a `version`
 * (utils.py ACTIVATION_RENAME: the old "gelu" was the tanh approximation, "gelu_orig" the erf one).
 */
function readActivation(fields: ConfigFields, legacy: boolean): { activation: Activation; activationName: string } {
  let value = fields.config['non_linearity'];
  if (legacy && value === 'gelu') value = 'gelu_new';
  else if (legacy && value === 'gelu_orig') value = 'gelu';
  if (typeof value !== 'string') return fields.fail('non_linearity', `must be a string, got ${show(value)}`, { activation: 'relu', activationName: 'relu' });
  const activation = ACTIVATIONS[value.toLowerCase()];
  if (!activation) return fields.fail('non_linearity', `${show(value)} is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`, { activation: 'relu', activationName: 'relu' });
  return { activation, activationName: value.toLowerCase() };
}

/** A float, or a learned scalar ('learned') or vector ('channel') stored as the `scaling` tensor. */
function readScaling(fields: ConfigFields): BottleneckSettings['scaling'] {
  const value = fields.config['scaling'];
  if (value === 'learned' || value === 'channel') return value;
  // JSON has no float/int distinction; Python would refuse an int, we read it as the float it names.
  return fields.number('scaling', { fallback: 1, min: -MAX_SCALING, max: MAX_SCALING });
}

/**
 * `reduction_factor`: a number > 0, or a mapping from layer index (as a string) to one, with an
 * optional "default" (BottleneckLayer.add_adapter). The width is `int(hidden_size // factor)`,
 * at least 1 (Adapter.__init__).
 */
function readReductionFactor(fields: ConfigFields, hidden: number): Pick<BottleneckSettings, 'width' | 'reductionFactor'> {
  const value = fields.config['reduction_factor'];
  const positive = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0;
  const widthOf = (factor: number) => Math.max(1, pythonFloorDiv(hidden, factor));
  if (value === undefined || value === null || positive(value)) {
    const factor = (value as number | undefined | null) ?? 16;
    return { width: () => widthOf(factor), reductionFactor: () => String(factor) };
  }
  if (typeof value !== 'object' || Array.isArray(value)) return fields.fail('reduction_factor', `must be a number greater than 0 or an object of layer indices to such numbers, got ${show(value)}`, { width: () => 1, reductionFactor: () => '?' });
  const entries = Object.entries(value as JsonObject);
  if (entries.length > 4096) fields.problems.push(`reduction_factor has ${entries.length} entries; at most 4096`);
  for (const [key, v] of entries.slice(0, 4096)) {
    if (key !== 'default' && !/^(0|[1-9]\d{0,8})$/.test(key)) fields.problems.push(`reduction_factor key ${show(key.slice(0, 40))} must be a layer index or "default"`);
    else if (!positive(v)) fields.problems.push(`reduction_factor["${key}"] must be a number greater than 0, got ${show(v)}`);
  }
  const table = value as Record<string, number>;
  const factorOf = (layer: number) => table[String(layer)] ?? table['default'];
  return { width: (layer) => (factorOf(layer) === undefined ? undefined : widthOf(factorOf(layer)!)), reductionFactor: (layer) => String(factorOf(layer) ?? 'none') };
}

/**
 * Python's float floor division `a // b` (fmod-based, as CPython's float_floor_div), for
 * `hidden_size // reduction_factor`; it differs from Math.floor(a / b) when a / b rounds up.
 *
 * @example pythonFloorDiv(64, 0.1) // 639, where Math.floor(64 / 0.1) is 640
 */
export function pythonFloorDiv(a: number, b: number): number {
  const mod = a % b;
  let div = (a - mod) / b;
  if (mod !== 0 && b < 0 !== mod < 0) div -= 1;
  const floor = Math.floor(div);
  return div - floor > 0.5 ? floor + 1 : floor;
}

function readLeaveOut(fields: ConfigFields): Set<number> {
  const value = fields.config['leave_out'];
  if (value === undefined || value === null) return new Set();
  if (!Array.isArray(value) || value.length > 4096 || !value.every((v) => Number.isInteger(v))) return fields.fail('leave_out', `must be a list of layer indices, got ${show(value)}`, new Set());
  return new Set(value as number[]);
}

/** A string field (or null/absent); problems go to `fields`. */
function optionalString(fields: ConfigFields, field: string, maxLength: number): string | undefined {
  const value = fields.config[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value.length > maxLength) return fields.fail(field, `must be a string of at most ${maxLength} characters, got ${show(value)}`, undefined);
  return value;
}
