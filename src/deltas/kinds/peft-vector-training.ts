/**
 * What the trainable kinds whose deltas are one vector (or two) per module share — IA3
 * (ia3-training.ts), BitFit (bitfit-training.ts) and LN tuning (ln-tuning-training.ts): the
 * request's PEFT targeting options read by the same rules the served delta will be parsed with
 * (peft/targets.ts), so what a job trains is exactly what the stored delta applies; and the
 * adapter files written as PEFT's save_pretrained writes them.
 */
import { z } from 'zod';
import type { ArchitectureSpec, NamedModule } from '../../model/architecture.js';
import type { TrainableParam } from '../../model/lower-training.js';
import { encodeSafetensors, parseSafetensors } from '../../model/safetensors.js';
import { ConfigFields, parseConfigObject, type JsonObject } from '../peft/config-fields.js';
import { isTargeted, MAX_PATTERN_LENGTH, readTargetRules, type TargetRules } from '../peft/targets.js';
import { TrainingOptionsError, type DeltaFileBytes } from '../training.js';

/**
 * PEFT's `Optional[Union[list[str], str]]` module fields: a list of names (exact, or `.name`
 * suffixes), a full-match regex string ('all-linear' included), or null for PEFT's default.
 */
export const ModuleField = z
  .union([z.string().min(1).max(MAX_PATTERN_LENGTH), z.array(z.string().min(1).max(MAX_PATTERN_LENGTH)).min(1).max(512)])
  .nullable()
  .default(null);

export type ModuleField = z.infer<typeof ModuleField>;

/**
 * The modules PEFT would put the method's layer on, for the targeting fields of `config`
 * (target_modules, exclude_modules), read with the served kind's rules. A problem in a field is a
 * TrainingOptionsError naming it; so is a target that selects nothing.
 *
 * @example targetedModules({ target_modules: ['q_proj'] }, ['k_proj'], arch).map((m) => m.path) // ['model.layers.0.self_attn.q_proj', ...]
 */
export function targetedModules(config: JsonObject, defaults: string[] | undefined, arch: ArchitectureSpec): NamedModule[] {
  const fields = new ConfigFields(config);
  const linear = arch.modules.filter((m) => m.kind === 'linear').map((m) => m.path);
  const rules: TargetRules = readTargetRules(fields, defaults, linear);
  throwProblems(fields, 'target_modules');
  const targeted = arch.modules.filter((m) => isTargeted(rules, m.path));
  if (targeted.length === 0) throw new TrainingOptionsError('target_modules', `${JSON.stringify(config['target_modules'] ?? defaults)} selects no module of the ${arch.family} backbone`);
  return targeted;
}

/**
 * Throws the first problem `fields` collected as a TrainingOptionsError naming the field it is about (or `fallback`).
 *
 * @example throwProblems(fields, 'feedforward_modules') // TrainingOptionsError('feedforward_modules', 'feedforward_modules must be a subset of target_modules ...')
 */
export function throwProblems(fields: ConfigFields, fallback: string): void {
  const problem = fields.problems[0];
  if (problem === undefined) return;
  const field = /^([a-z_]+)/.exec(problem)?.[1];
  throw new TrainingOptionsError(field && field in fields.config ? field : fallback, problem);
}

/**
 * A target field as PEFT's save_pretrained writes it: its `_prepare_adapter_config` replaced null
 * by the model type's defaults, and a list became a set (written as a list, here sorted).
 *
 * @example writtenModules(null, ['k_proj', 'v_proj']) // ['k_proj', 'v_proj']
 */
export function writtenModules(value: ModuleField, defaults: string[] | undefined): string | string[] | null {
  const resolved = value ?? defaults ?? null;
  return Array.isArray(resolved) ? [...new Set(resolved)].sort() : resolved;
}

/**
 * adapter_config.json's fields for a causal LM as PEFT's save_pretrained writes them for every
 * method, with the method's own `fields` (peft_type, targeting, its options).
 */
export function adapterConfig(baseModel: string, fields: Record<string, unknown>): Record<string, unknown> {
  return { auto_mapping: null, base_model_name_or_path: baseModel, inference_mode: true, modules_to_save: null, revision: null, task_type: 'CAUSAL_LM', ...fields };
}

/** PEFT's key of a trainable parameter in adapter_model.safetensors. */
const adapterKey = (param: string) => `base_model.model.${param}`;

/**
 * adapter_config.json and adapter_model.safetensors as PEFT's save_pretrained writes them: the
 * config with `json.dumps(indent=2, sort_keys=True)`, each parameter under
 * `base_model.model.<name>` as F32, with metadata {"format": "pt"}.
 *
 * @example encodeAdapter({ peft_type: 'IA3', ... }, [{ name: 'model.layers.0.mlp.down_proj.ia3_l', shape: [1, 128] }], values)
 */
export function encodeAdapter(config: Record<string, unknown>, params: readonly TrainableParam[], values: ReadonlyMap<string, Float32Array>): DeltaFileBytes {
  const sorted = Object.fromEntries(Object.keys(config).sort().map((k) => [k, config[k]]));
  const record: Parameters<typeof encodeSafetensors>[0] = {};
  for (const { name, shape } of params) {
    const key = adapterKey(name);
    const data = values.get(name)!;
    if (data.length !== shape.reduce((a, b) => a * b, 1)) throw new RangeError(`${key}: ${data.length} values for shape [${shape}]`);
    record[key] = { dtype: 'F32', shape, data };
  }
  return { config: JSON.stringify(sorted, null, 2), weights: encodeSafetensors(record, { format: 'pt' }) };
}

/**
 * `params` (a kind's starting values) with each parameter the stored delta holds set to its stored
 * values, for `fromDelta`; one the file lacks keeps its start, as PEFT loads such a file.
 *
 * @example const params = loadStoredValues(kind.init(arch, options, 0), readAdapter(files).tensor);
 */
export function loadStoredValues(params: Map<string, Float32Array>, tensor: (key: string) => Float32Array | undefined): Map<string, Float32Array> {
  for (const [name, values] of params) {
    const stored = tensor(adapterKey(name));
    if (stored) values.set(stored);
  }
  return params;
}

/**
 * A stored delta's config object and a reader of its tensors by key (undefined when absent), for
 * `fromDelta`: the delta was validated by its kind when stored.
 *
 * @example const { config, tensor } = readAdapter(files); tensor('base_model.model.model.norm.ln_tuning_layers.weight')
 */
export function readAdapter(files: DeltaFileBytes): { config: JsonObject; tensor(key: string): Float32Array | undefined } {
  const config = parseConfigObject(files.config);
  if (typeof config === 'string') throw new Error(config);
  const parsed = parseSafetensors(files.weights, 'adapter_model.safetensors');
  return { config, tensor: (key) => (parsed.header.tensors.has(key) ? Float32Array.from(parsed.tensor(key)) : undefined) };
}
