import fs from 'node:fs';
import path from 'node:path';
import type { ArchitectureSpec, ProjectionSpec } from '../model/architecture.js';
import { allProjections } from '../model/architecture.js';
import { parseSafetensors } from '../model/safetensors.js';
import { DeltaValidationError } from './errors.js';

/**
 * One module's LoRA: as PEFT stores it (A [r, in], B [out, r], scale apart), or already in the
 * engine's slot layout (`layout: 'slot'`: A [in, R], B [R, out] with the scale folded in and the
 * rank zero-padded to R), which a slot write copies in one piece.
 */
export interface LoraModule {
  a: Float32Array;
  b: Float32Array;
  rank: number;
  scale: number;
  layout?: 'slot';
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

/** Reads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors). */
export function readPeftDirectory(dir: string, name: string, arch: ArchitectureSpec, maxRank: number): LoraDelta {
  const configPath = path.join(dir, 'adapter_config.json');
  const modelPath = path.join(dir, 'adapter_model.safetensors');
  for (const file of [configPath, modelPath]) {
    if (!fs.existsSync(file)) throw new DeltaValidationError(name, [`${file} not found`]);
  }
  return parsePeftLora(name, fs.readFileSync(configPath, 'utf8'), fs.readFileSync(modelPath), arch, maxRank);
}

/**
 * Validates a PEFT LoRA adapter against the backbone and returns its weights, collecting every
 * problem before failing.
 *
 * @example parsePeftLora('acme-sql', configJson, safetensorsBytes, arch, 16).modules.size // 210
 */
export function parsePeftLora(name: string, configText: string, weightBytes: Uint8Array, arch: ArchitectureSpec, maxRank: number): LoraDelta {
  let config: PeftLoraConfig;
  try {
    config = JSON.parse(configText);
  } catch (err) {
    throw new DeltaValidationError(name, [`adapter_config.json is not valid JSON: ${(err as Error).message}`], { cause: err });
  }
  const problems = configProblems(config);
  if (problems.length) throw new DeltaValidationError(name, problems);
  let parsed: ReturnType<typeof parseSafetensors>;
  try {
    parsed = parseSafetensors(weightBytes, 'adapter_model.safetensors');
  } catch (err) {
    throw new DeltaValidationError(name, [(err as Error).message], { cause: err });
  }
  const projections = new Map(allProjections(arch).flat().map((p) => [p.modulePath, p]));
  const modules: LoraDelta['modules'] = new Map();
  const seen = new Set<string>();
  for (const key of parsed.header.tensors.keys()) {
    const match = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(key);
    if (!match) {
      problems.push(`${key}: not a LoRA tensor this server applies (expected base_model.model.<module>.lora_A/lora_B.weight)`);
      continue;
    }
    const modulePath = match[1]!;
    if (seen.has(modulePath)) continue;
    seen.add(modulePath);
    const projection = projections.get(modulePath);
    if (!projection) {
      problems.push(`${key}: module '${modulePath}' does not exist in the backbone (or is not a linear layer deltas can target)`);
      continue;
    }
    const loaded = loadModule(modulePath, projection, parsed, config, maxRank, problems);
    if (loaded) modules.set(modulePath, loaded);
  }
  if (!problems.length && modules.size === 0) problems.push('adapter_model.safetensors holds no LoRA tensors');
  if (problems.length) throw new DeltaValidationError(name, problems);
  return { kind: 'lora', name, maxRank: Math.max(...[...modules.values()].map((m) => m.rank)), modules };
}

function configProblems(config: PeftLoraConfig): string[] {
  const problems: string[] = [];
  if (typeof config !== 'object' || config === null) return ['adapter_config.json must be a JSON object'];
  if (config.peft_type !== 'LORA') problems.push(`peft_type '${config.peft_type}' is not supported (supported: LORA)`);
  if (!Number.isInteger(config.r) || config.r <= 0) problems.push(`r must be a positive integer, got ${JSON.stringify(config.r)}`);
  if (config.use_dora) problems.push('use_dora: DoRA adapters are not supported');
  if (config.bias && config.bias !== 'none') problems.push(`bias '${config.bias}' is not supported (only 'none')`);
  if (config.modules_to_save?.length) problems.push('modules_to_save is not supported (a delta may not replace whole modules)');
  return problems;
}

function loadModule(
  modulePath: string,
  projection: ProjectionSpec,
  parsed: ReturnType<typeof parseSafetensors>,
  config: PeftLoraConfig,
  maxRank: number,
  problems: string[],
): { a: Float32Array; b: Float32Array; rank: number; scale: number } | undefined {
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
  if (problems.length > before) return undefined;
  const a = parsed.view(keyA);
  const b = parsed.view(keyB);
  for (const [key, data] of [[keyA, a], [keyB, b]] as const) {
    const bad = firstNonFinite(data);
    if (bad >= 0) problems.push(`${key}: value at index ${bad} is not finite (${data[bad]})`);
  }
  const expectedRank = patternValue(config.rank_pattern, modulePath) ?? config.r;
  if (rank !== expectedRank) problems.push(`${keyA}: rank ${rank} differs from the configured r=${expectedRank}`);
  const alpha = patternValue(config.alpha_pattern, modulePath) ?? config.lora_alpha ?? 8;
  const scale = config.use_rslora ? alpha / Math.sqrt(rank) : alpha / rank;
  return { a, b, rank, scale };
}

/** Index of the first NaN or ±Infinity, or -1. `x * 0` is 0 for every finite x and NaN otherwise, so one sum screens a whole tensor. */
export function firstNonFinite(data: Float32Array): number {
  let screen = 0;
  for (let i = 0; i < data.length; i++) screen += data[i]! * 0;
  if (screen === 0) return -1;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) return i;
  return -1;
}

/** PEFT matches rank_pattern/alpha_pattern keys as a regex against the end of the module path. */
function patternValue(patterns: Record<string, number> | undefined, modulePath: string): number | undefined {
  if (!patterns) return undefined;
  for (const [pattern, value] of Object.entries(patterns)) {
    try {
      if (new RegExp(`(.*\\.)?(${pattern})$`).test(modulePath)) return value;
    } catch {
      if (modulePath.endsWith(pattern)) return value;
    }
  }
  return undefined;
}
