import type { ArchitectureSpec, ProjectionSpec } from '../model/architecture.js';
import { allProjections } from '../model/architecture.js';
import { parseSafetensors, type ParsedSafetensors } from '../model/safetensors.js';
import { DeltaValidationError } from './errors.js';
import { ConfigFields, parseConfigObject, show, type JsonObject } from './peft/config-fields.js';
import { compilePatternTable, isTargeted, MAX_PATTERN_LENGTH, patternValue, readTargetRules, type PatternTable, type TargetRules } from './peft/targets.js';

/** One module's LoRA as PEFT stores it: A [r, in], B [out, r], and the scale apart. */
export interface LoraModule {
  a: Float32Array;
  b: Float32Array;
  rank: number;
  scale: number;
  /** DoRA's lora_magnitude_vector m [out] (use_dora adapters only). */
  magnitude?: Float32Array;
}

/**
 * A LoRA delta resolved against a backbone: per module A [r, in], B [out, r] and the folded scale.
 * From `parsePeftLora`, A and B may be views of the weight bytes it was given: read them, never write.
 */
export interface LoraDelta {
  kind: 'lora';
  name: string;
  maxRank: number;
  modules: Map<string, LoraModule>;
  /** What validation accepted but ignored (tensors PEFT would ignore too), for the uploader. */
  warnings?: string[];
}

export interface PeftLoraConfig {
  peft_type: string;
  r: number;
  lora_alpha?: number;
  use_rslora?: boolean;
  use_dora?: boolean;
  target_modules?: string[] | string | null;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  fan_in_fan_out?: boolean;
  bias?: string;
  modules_to_save?: string[] | null;
}

/**
 * Validates a PEFT LoRA adapter against the backbone and returns its weights, collecting every
 * problem before failing (the files as uploaded; see parsePeftLoraModules).
 *
 * @example parsePeftLora('acme-sql', configJson, safetensorsBytes, arch, 16).modules.size // 210
 */
export function parsePeftLora(name: string, configText: string, weightBytes: Uint8Array, arch: ArchitectureSpec, maxRank: number): LoraDelta {
  const raw = parseConfigObject(configText);
  if (typeof raw === 'string') throw new DeltaValidationError(name, [raw]);
  let parsed: ParsedSafetensors;
  try {
    parsed = parseSafetensors(weightBytes, 'adapter_model.safetensors');
  } catch (err) {
    throw new DeltaValidationError(name, [(err as Error).message], { cause: err });
  }
  const { modules, warnings } = parsePeftLoraModules(name, raw, parsed, arch, maxRank, { dora: false });
  return { kind: 'lora', name, maxRank: Math.max(...[...modules.values()].map((m) => m.rank)), modules, warnings };
}

/**
 * The LoRA modules of an adapter as PEFT stores them. Modules are targeted as PEFT targets them
 * (see peft/targets.ts); tensors of modules that are not targeted, or not in the backbone, are
 * ignored as PEFT's `load_state_dict(strict=False)` ignores them, and reported in `warnings`.
 * With `options.dora`, a `use_dora: true` adapter is read too, each module with its magnitude
 * vector (`dora` in the result says so); without, use_dora is refused.
 */
export function parsePeftLoraModules(
  name: string,
  raw: JsonObject,
  parsed: ParsedSafetensors,
  arch: ArchitectureSpec,
  maxRank: number,
  options: { dora: boolean },
): { modules: Map<string, LoraModule>; warnings: string[]; dora: boolean } {
  const fields = new ConfigFields(raw);
  const config = readLoraConfig(fields, arch, options.dora);
  if (fields.problems.length) throw new DeltaValidationError(name, fields.problems.map((p) => `adapter_config.json: ${p}`));
  const problems: string[] = [];
  const warnings: string[] = [];
  const present = loraTensorModules(parsed.header.tensors.keys(), config.useDora, (key, why) => warnings.push(`${key}: ignored (${why})`));
  const modules: LoraDelta['modules'] = new Map();
  const targeted = arch.modules.filter((m) => isTargeted(config.targets, m.path));
  if (targeted.length === 0) throw new DeltaValidationError(name, [`adapter_config.json: target_modules selects no module of the backbone (PEFT refuses such an adapter too)`]);
  for (const module of targeted) {
    if (module.kind !== 'linear') {
      problems.push(`target_modules selects '${module.path}', a${module.kind === 'head' ? 'n output head' : ` ${module.kind}`} module; LoRA applies to the transformer blocks' linear layers only`);
      continue;
    }
    if (!present.delete(module.path)) {
      warnings.push(`${module.path}: targeted but has no lora_A/lora_B tensors; it is left unchanged (PEFT initialises lora_B to zero${config.useDora ? ' and the magnitude to ‖W‖' : ''})`);
      continue;
    }
    const projection = projectionOf(arch, module.path);
    const loaded = loadModule(module.path, projection, parsed, config, maxRank, problems);
    const magnitude = config.useDora ? loadMagnitude(module.path, projection, parsed, problems) : undefined;
    if (loaded) modules.set(module.path, magnitude ? { ...loaded, magnitude } : loaded);
  }
  for (const path of present) warnings.push(`${path}: its tensors are ignored: ${arch.modules.some((m) => m.path === path) ? 'target_modules does not select it' : 'the backbone has no such module'} (PEFT ignores them too)`);
  if (!problems.length && modules.size === 0) problems.push('adapter_model.safetensors holds no LoRA tensors for the modules adapter_config.json targets');
  if (problems.length) throw new DeltaValidationError(name, problems);
  return { modules, warnings, dora: config.useDora };
}

/** The largest |lora_alpha| accepted (see readLoraConfig). */
export const MAX_ALPHA = 1e6;

/** PEFT's default LoRA targets per model type (peft/utils/constants.py), for target_modules: null. */
const DEFAULT_LORA_TARGETS: Record<string, string[]> = { llama: ['q_proj', 'v_proj'], mistral: ['q_proj', 'v_proj'], qwen2: ['q_proj', 'v_proj'], gpt2: ['c_attn'] };

/** The LoRA settings deltaserve applies, read and range-checked; problems go to `fields`. */
interface LoraSettings {
  r: number;
  alpha: number;
  useRslora: boolean;
  useDora: boolean;
  targets: TargetRules;
  rankPattern: PatternTable;
  alphaPattern: PatternTable;
}

function readLoraConfig(fields: ConfigFields, arch: ArchitectureSpec, allowDora: boolean): LoraSettings {
  const peftType = fields.config['peft_type'];
  if (peftType !== 'LORA') fields.problems.push(`peft_type ${typeof peftType === 'string' ? `'${peftType.slice(0, 40)}'` : show(peftType)} is not supported here (expected 'LORA')`);
  const r = fields.number('r', { fallback: 8, integer: true, min: 1, max: 65536 });
  // PEFT sets no bound; ours keeps scale · B · activations inside float32 for any sane adapter
  // (real ones use alpha 8-512), where an alpha of 1e38 would overflow every row it touched.
  const alpha = fields.number('lora_alpha', { fallback: 8, min: -MAX_ALPHA, max: MAX_ALPHA });
  const useRslora = fields.boolean('use_rslora', false);
  const useDora = fields.boolean('use_dora', false);
  if (useDora && !allowDora) fields.problems.push('use_dora: DoRA adapters are served by the lora delta kind (which reads the backbone); this reader takes plain LoRA factors only');
  const conv1d = arch.blocks[0]?.o.layout === 'in_out';
  if (fields.boolean('fan_in_fan_out', false) && !conv1d) fields.problems.push(`fan_in_fan_out is true, but ${arch.family}'s linear layers are nn.Linear, not Conv1D (only GPT-2-style models store weights [in, out])`);
  if (fields.oneOf('bias', ['none', 'all', 'lora_only'], 'none') !== 'none') fields.problems.push(`bias '${String(fields.config['bias'])}' is not supported (only 'none': a delta may not carry bias tensors)`);
  fields.number('lora_dropout', { fallback: 0, min: 0, max: 1 });
  const init = fields.config['init_lora_weights'];
  if (init !== undefined && init !== null && typeof init !== 'boolean' && init !== 'gaussian') fields.problems.push(`init_lora_weights ${show(init)} is not supported (true, false or 'gaussian'; methods such as PiSSA or LoftQ change the base weights)`);
  const empty = (v: unknown) => (Array.isArray(v) ? v.length === 0 : typeof v === 'object' && v !== null && Object.keys(v).length === 0);
  for (const field of ['modules_to_save', 'layer_replication', 'target_parameters', 'trainable_token_indices', 'alora_invocation_tokens', 'megatron_config']) {
    fields.unsupported(field, empty, `${field} is not supported (a delta may only add LoRA to linear layers)`);
  }
  for (const field of ['use_qalora', 'lora_bias', 'use_bdlora']) fields.unsupported(field, (v) => v === false, `${field} is not supported`);
  const linear = arch.modules.filter((m) => m.kind === 'linear').map((m) => m.path);
  const targets = readTargetRules(fields, DEFAULT_LORA_TARGETS[arch.family], linear);
  const patternRule = { maxEntries: 256, maxKeyLength: MAX_PATTERN_LENGTH };
  const rankPattern = compilePatternTable(fields, 'rank_pattern', fields.numberMap('rank_pattern', { ...patternRule, integer: true, min: 1, max: 65536 }));
  const alphaPattern = compilePatternTable(fields, 'alpha_pattern', fields.numberMap('alpha_pattern', { ...patternRule, min: -MAX_ALPHA, max: MAX_ALPHA }));
  return { r, alpha, useRslora, useDora, targets, rankPattern, alphaPattern };
}

/**
 * Module paths that have LoRA tensors (`base_model.model.<module>.lora_A|lora_B.weight`, and with
 * use_dora `.lora_magnitude_vector`); every other key is reported through `ignore`.
 */
function loraTensorModules(keys: Iterable<string>, useDora: boolean, ignore: (key: string, why: string) => void): Set<string> {
  const modules = new Set<string>();
  for (const key of keys) {
    const match = /^base_model\.model\.(.+)\.lora_[AB]\.weight$/.exec(key);
    const magnitude = MAGNITUDE_KEY.exec(key);
    if (match) modules.add(match[1]!);
    else if (magnitude && useDora) modules.add(magnitude[1]!);
    else if (magnitude) ignore(key, 'a DoRA magnitude, but use_dora is false; PEFT ignores unexpected keys');
    else ignore(key, 'not a lora_A/lora_B weight; PEFT ignores unexpected keys');
  }
  return modules;
}

/**
 * DoRA's magnitude vector: PEFT saves it as `<module>.lora_magnitude_vector` (LoraModel.
 * _get_adapter_state_dict strips the `.weight` its DoraLinearLayer holds it under) and loads
 * either form (_remap_adapter_state_dict_for_load appends `.weight` before matching).
 */
const MAGNITUDE_KEY = /^base_model\.model\.(.+)\.lora_magnitude_vector(?:\.weight)?$/;

function projectionOf(arch: ArchitectureSpec, modulePath: string): ProjectionSpec {
  return allProjections(arch).flat().find((p) => p.modulePath === modulePath)!;
}

function loadModule(
  modulePath: string,
  projection: ProjectionSpec,
  parsed: ParsedSafetensors,
  config: LoraSettings,
  maxRank: number,
  problems: string[],
): LoraModule | undefined {
  const keyA = `base_model.model.${modulePath}.lora_A.weight`;
  const keyB = `base_model.model.${modulePath}.lora_B.weight`;
  const entryA = parsed.header.tensors.get(keyA);
  const entryB = parsed.header.tensors.get(keyB);
  if (!entryA || !entryB) {
    problems.push(`${modulePath}: needs both ${keyA} and ${keyB}`);
    return undefined;
  }
  const rank = entryA.shape[0]!;
  const before = problems.length;
  if (rank > maxRank) problems.push(`${keyA}: rank ${rank} exceeds max rank ${maxRank}`);
  if (entryA.shape.length !== 2 || entryA.shape[1] !== projection.inFeatures) problems.push(`${keyA}: shape [${entryA.shape}], expected [${rank}, ${projection.inFeatures}]`);
  if (entryB.shape.length !== 2 || entryB.shape[0] !== projection.outFeatures || entryB.shape[1] !== rank) problems.push(`${keyB}: shape [${entryB.shape}], expected [${projection.outFeatures}, ${rank}]`);
  for (const [key, entry] of [[keyA, entryA], [keyB, entryB]] as const) {
    if (!['F32', 'F16', 'BF16'].includes(entry.dtype)) problems.push(`${key}: dtype ${entry.dtype} is not supported (F32, F16, BF16)`);
  }
  const expectedRank = patternValue(config.rankPattern, modulePath) ?? config.r;
  if (rank !== expectedRank && problems.length === before) problems.push(`${keyA}: rank ${rank} differs from the configured r=${expectedRank}`);
  if (problems.length > before) return undefined;
  const a = parsed.view(keyA);
  const b = parsed.view(keyB);
  for (const [key, data] of [[keyA, a], [keyB, b]] as const) {
    const bad = firstNonFinite(data);
    if (bad >= 0) problems.push(`${key}: value at index ${bad} is not finite (${data[bad]})`);
  }
  const alpha = patternValue(config.alphaPattern, modulePath) ?? config.alpha;
  const scale = config.useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
  // The slot holds scale · B in float32, so it must be finite there too (lora_alpha 1e38 was not).
  if (problems.length === before && !Number.isFinite(Math.fround(scale * maxAbs(b)))) problems.push(`${keyB}: scaled by ${config.useRslora ? 'lora_alpha/sqrt(r)' : 'lora_alpha/r'} = ${scale}, its values overflow float32`);
  return problems.length > before ? undefined : { a, b, rank, scale };
}

/** DoRA's magnitude vector of one module: [out] floats, finite, under one of PEFT's two key forms (see MAGNITUDE_KEY). */
function loadMagnitude(modulePath: string, projection: ProjectionSpec, parsed: ParsedSafetensors, problems: string[]): Float32Array | undefined {
  const saved = `base_model.model.${modulePath}.lora_magnitude_vector`;
  const keys = [saved, `${saved}.weight`].filter((k) => parsed.header.tensors.has(k));
  if (keys.length !== 1) {
    problems.push(keys.length ? `${modulePath}: both ${keys[0]} and ${keys[1]} are present; PEFT loads them into one parameter, so which one wins is unclear` : `${modulePath}: use_dora is true but ${saved} is missing`);
    return undefined;
  }
  const key = keys[0]!;
  const entry = parsed.header.tensors.get(key)!;
  const before = problems.length;
  if (entry.shape.length !== 1 || entry.shape[0] !== projection.outFeatures) problems.push(`${key}: shape [${entry.shape}], expected [${projection.outFeatures}] (one magnitude per output feature)`);
  if (!['F32', 'F16', 'BF16'].includes(entry.dtype)) problems.push(`${key}: dtype ${entry.dtype} is not supported (F32, F16, BF16)`);
  if (problems.length > before) return undefined;
  const magnitude = parsed.view(key);
  const bad = firstNonFinite(magnitude);
  if (bad >= 0) problems.push(`${key}: value at index ${bad} is not finite (${magnitude[bad]})`);
  return problems.length > before ? undefined : magnitude;
}

function maxAbs(data: Float32Array): number {
  let max = 0;
  for (let i = 0; i < data.length; i++) max = Math.max(max, Math.abs(data[i]!));
  return max;
}

/** Index of the first NaN or ±Infinity, or -1. `x * 0` is 0 for every finite x and NaN otherwise, so one sum screens a whole tensor. */
export function firstNonFinite(data: Float32Array): number {
  let screen = 0;
  for (let i = 0; i < data.length; i++) screen += data[i]! * 0;
  if (screen === 0) return -1;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) return i;
  return -1;
}
