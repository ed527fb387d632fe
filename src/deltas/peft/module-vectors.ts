/**
 * What the specification kinds (BitFit, LN tuning) share when reading an adapter: both store one
 * or two plain vectors per module (a bias, a norm's weight and bias) under
 * `base_model.model.<module>.<suffix>`, and both accept the base PeftConfig fields.
 */
import type { ParsedSafetensors } from '../../model/safetensors.js';
import { firstNonFinite } from '../peft-lora.js';
import { ConfigFields, show, type JsonObject } from './config-fields.js';

/** PeftConfigMixin's and PeftConfig's own fields (peft/config.py), which every adapter_config.json may carry. */
export const PEFT_BASE_FIELDS = ['peft_type', 'task_type', 'auto_mapping', 'peft_version', 'base_model_name_or_path', 'revision', 'inference_mode'] as const;

/** PEFT's TaskType values (peft/utils/peft_types.py); PeftConfigMixin.__post_init__ refuses any other. */
const TASK_TYPES = ['SEQ_CLS', 'SEQ_2_SEQ_LM', 'CAUSAL_LM', 'TOKEN_CLS', 'QUESTION_ANS', 'FEATURE_EXTRACTION'] as const;

/**
 * Keeps the fields a config class knows and reports the rest: PEFT's `from_peft_type` drops keyword
 * arguments its config class lacks, with a warning, so an unknown field changes nothing there either.
 *
 * @example knownFields({ peft_type: 'LN_TUNING', r: 8 }, ['peft_type'], 'LNTuningConfig').ignored // ['adapter_config.json: r is ignored (…)']
 */
export function knownFields(config: JsonObject, known: readonly string[], configClass: string): { fields: ConfigFields; ignored: string[] } {
  const kept: JsonObject = {};
  const ignored: string[] = [];
  for (const [field, value] of Object.entries(config)) {
    if (known.includes(field)) kept[field] = value;
    else ignored.push(`adapter_config.json: ${field.slice(0, 60)} is ignored (${configClass} has no such field; PEFT drops it too)`);
  }
  return { fields: new ConfigFields(kept), ignored };
}

/**
 * Checks peft_type and type-checks the base PeftConfig fields deltaserve does not otherwise use;
 * problems go to `fields`.
 *
 * @example readBaseFields(new ConfigFields({ peft_type: 'BITFIT', task_type: 'CHAT' }), 'BITFIT') // problem: task_type must be one of …
 */
export function readBaseFields(fields: ConfigFields, peftType: string): void {
  const type = fields.config['peft_type'];
  if (type !== peftType) fields.problems.push(`peft_type ${show(type)} is not supported here (expected '${peftType}')`);
  optionalString(fields, 'base_model_name_or_path', 1024);
  optionalString(fields, 'revision', 256);
  optionalString(fields, 'peft_version', 128);
  fields.oneOf('task_type', TASK_TYPES, 'CAUSAL_LM');
  fields.boolean('inference_mode', true);
  const mapping = fields.config['auto_mapping'];
  if (mapping !== undefined && mapping !== null && (typeof mapping !== 'object' || Array.isArray(mapping))) fields.fail('auto_mapping', `must be an object or null, got ${show(mapping)}`, null);
}

function optionalString(fields: ConfigFields, field: string, maxLength: number): void {
  const value = fields.config[field];
  if (value === undefined || value === null) return;
  if (typeof value !== 'string') fields.fail(field, `must be a string or null, got ${show(value)}`, null);
  else if (value.length > maxLength) fields.fail(field, `is ${value.length} characters long; at most ${maxLength}`, null);
}

/**
 * Splits an adapter's tensor keys into per-module vectors: `pattern` captures the module path
 * and the vector's name (e.g. `bias`); every other key goes to `ignore`.
 *
 * @example moduleVectors(['base_model.model.m.bias'], /^base_model\.model\.(.+)\.(bias)$/, …) // Map { 'm' => Map { 'bias' => key } }
 */
export function moduleVectors(keys: Iterable<string>, pattern: RegExp, ignore: (key: string) => void): Map<string, Map<string, string>> {
  const modules = new Map<string, Map<string, string>>();
  for (const key of keys) {
    const match = pattern.exec(key);
    if (!match) {
      ignore(key);
      continue;
    }
    const [, module, name] = match as unknown as [string, string, string];
    if (!modules.has(module)) modules.set(module, new Map());
    modules.get(module)!.set(name, key);
  }
  return modules;
}

/**
 * One vector of `length` floats (F32, F16 or BF16; every value finite), or undefined after
 * pushing each problem naming the tensor. The result may be a view of the upload: copy it.
 *
 * @example readVector(parsed, 'base_model.model.model.layers.0.self_attn.q_proj.bias', 64, problems) // Float32Array(64)
 */
export function readVector(parsed: ParsedSafetensors, key: string, length: number, problems: string[]): Float32Array | undefined {
  const entry = parsed.header.tensors.get(key)!;
  const before = problems.length;
  if (!['F32', 'F16', 'BF16'].includes(entry.dtype)) problems.push(`${key}: dtype ${entry.dtype} is not supported (F32, F16, BF16)`);
  if (entry.shape.length !== 1 || entry.shape[0] !== length) problems.push(`${key}: shape [${entry.shape}], expected [${length}]`);
  if (problems.length > before) return undefined;
  const data = parsed.view(key);
  const bad = firstNonFinite(data);
  if (bad >= 0) {
    problems.push(`${key}: value at index ${bad} is not finite (${data[bad]})`);
    return undefined;
  }
  return data;
}

/**
 * Copies named vectors into one buffer (one allocation, one transfer between threads) and returns
 * them by name: the slot-layout tensors of a delta.
 *
 * @example packVectors([['bitfit.m', Float32Array.of(1, 2)]]).get('bitfit.m') // Float32Array [1, 2]
 */
export function packVectors(vectors: readonly (readonly [string, ArrayLike<number>])[]): Map<string, Float32Array> {
  const buffer = new Float32Array(vectors.reduce((n, [, v]) => n + v.length, 0));
  const out = new Map<string, Float32Array>();
  let offset = 0;
  for (const [name, values] of vectors) {
    const slice = buffer.subarray(offset, (offset += values.length));
    slice.set(values);
    out.set(name, slice);
  }
  return out;
}
