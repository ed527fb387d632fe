/**
 * What the trainable kinds whose deltas are one vector (or two) per module share — IA3
 * (ia3-training.ts), BitFit (bitfit-training.ts) and LN tuning (ln-tuning-training.ts): the
 * request's PEFT targeting options read by the same rules the served delta will be parsed with
 * (peft/targets.ts), so what a job trains is exactly what the stored delta applies; and the
 * adapter files written as PEFT's save_pretrained writes them.
 */
import { z } from 'zod';
import type { ArchitectureSpec, NamedModule } from '../../model/architecture.js';
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

/** One tensor of an adapter file: PEFT's key (with `base_model.model.`), shape and values. */
export interface AdapterTensor {
  key: string;
  shape: number[];
  data: Float32Array;
}

/**
 * adapter_config.json and adapter_model.safetensors as PEFT's save_pretrained writes them: the
 * config with `json.dumps(indent=2, sort_keys=True)`, the weights as F32 with metadata
 * {"format": "pt"}.
 *
 * @example encodeAdapter({ peft_type: 'IA3', ... }, [{ key: 'base_model.model.model.layers.0.mlp.down_proj.ia3_l', shape: [1, 128], data }])
 */
export function encodeAdapter(config: Record<string, unknown>, tensors: readonly AdapterTensor[]): DeltaFileBytes {
  const sorted = Object.fromEntries(Object.keys(config).sort().map((k) => [k, config[k]]));
  const record: Parameters<typeof encodeSafetensors>[0] = {};
  for (const t of tensors) {
    if (t.data.length !== t.shape.reduce((a, b) => a * b, 1)) throw new RangeError(`${t.key}: ${t.data.length} values for shape [${t.shape}]`);
    record[t.key] = { dtype: 'F32', shape: t.shape, data: t.data };
  }
  return { config: JSON.stringify(sorted, null, 2), weights: encodeSafetensors(record, { format: 'pt' }) };
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
