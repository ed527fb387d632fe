import fs from 'node:fs';
import path from 'node:path';
import type { ArchitectureSpec } from '../model/architecture.js';
import { parseSafetensors, type ParsedSafetensors } from '../model/safetensors.js';
import { DeltaValidationError } from './errors.js';
import { deltaKinds, detectKind, type BaseWeightReader, type DeltaLimits, type ParsedDelta } from './kind.js';
import './kinds/index.js';
import { parseConfigObject, show } from './peft/config-fields.js';

/** An adapter's two files as uploaded: adapter_config.json and the weights. */
export interface AdapterFiles {
  config: string | Uint8Array;
  weights: Uint8Array;
}

/**
 * Validates an adapter of any registered kind against the backbone: the config names the kind
 * (PEFT's peft_type), the kind parses and lays it out. Throws DeltaValidationError listing every
 * problem, naming the field or tensor. `baseWeight` reads the backbone's frozen weights for the
 * kinds that need them (see ParseInput).
 *
 * @example parseDelta('acme/ia3@1', files, arch, limits).kind // 'ia3'
 */
export function parseDelta(name: string, files: AdapterFiles, arch: ArchitectureSpec, limits: DeltaLimits, baseWeight?: BaseWeightReader): ParsedDelta {
  const text = typeof files.config === 'string' ? files.config : new TextDecoder().decode(files.config);
  const config = parseConfigObject(text);
  if (typeof config === 'string') throw new DeltaValidationError(name, [config]);
  const kind = detectKind(config);
  if (!kind) {
    const type = config['peft_type'];
    const supported = deltaKinds().map((k) => k.format).join('; ');
    throw new DeltaValidationError(name, [`adapter_config.json: peft_type ${typeof type === 'string' ? `'${type.slice(0, 40)}'` : show(type)} is not a delta kind this server serves (${supported})`]);
  }
  let weights: ParsedSafetensors;
  try {
    weights = parseSafetensors(files.weights, 'adapter_model.safetensors');
  } catch (err) {
    throw new DeltaValidationError(name, [(err as Error).message], { cause: err });
  }
  return kind.parse({ name, config, weights, arch, limits, baseWeight });
}

/** Reads and validates an adapter directory (adapter_config.json + adapter_model.safetensors). */
export function readDeltaDirectory(dir: string, name: string, arch: ArchitectureSpec, limits: DeltaLimits, baseWeight?: BaseWeightReader): ParsedDelta {
  const configPath = path.join(dir, 'adapter_config.json');
  const weightsPath = path.join(dir, 'adapter_model.safetensors');
  for (const file of [configPath, weightsPath]) {
    if (!fs.existsSync(file)) throw new DeltaValidationError(name, [`${file} not found`]);
  }
  return parseDelta(name, { config: fs.readFileSync(configPath, 'utf8'), weights: fs.readFileSync(weightsPath) }, arch, limits, baseWeight);
}
