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
    // shared (bottleneck kind): a PyTorch pickle (pytorch_adapter.bin, adapter_model.bin) is named as such.
    const message = looksLikePickle(files.weights) ? `adapter_model: this is a PyTorch pickle (pytorch_adapter.bin / adapter_model.bin), not safetensors; only safetensors weights are accepted` : (err as Error).message;
    throw new DeltaValidationError(name, [message], { cause: err });
  }
  if (limits.kinds && !limits.kinds.includes(kind.name)) throw new DeltaValidationError(name, [`adapter_config.json: this is a ${kind.name} delta, a kind this server does not serve (--delta-kinds ${limits.kinds.join(',')})`]);
  return kind.parse({ name, config, weights, arch, limits, baseWeight });
}

/** Reads and validates an adapter directory (adapter_config.json + adapter_model.safetensors or adapter.safetensors). */
export function readDeltaDirectory(dir: string, name: string, arch: ArchitectureSpec, limits: DeltaLimits, baseWeight?: BaseWeightReader): ParsedDelta {
  const configPath = path.join(dir, 'adapter_config.json');
  if (!fs.existsSync(configPath)) throw new DeltaValidationError(name, [`${configPath} not found`]);
  return parseDelta(name, { config: fs.readFileSync(configPath, 'utf8'), weights: fs.readFileSync(adapterWeightsPath(dir, name)) }, arch, limits, baseWeight);
}

/**
 * shared (bottleneck kind): an adapter directory's weights, PEFT's adapter_model.safetensors or
 * the adapters library's adapter.safetensors; its PyTorch pickles are refused by name.
 *
 * @example adapterWeightsPath('adapters/sst2', 'sst2') // 'adapters/sst2/adapter.safetensors'
 */
export function adapterWeightsPath(dir: string, name: string): string {
  const found = ['adapter_model.safetensors', 'adapter.safetensors'].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  if (found) return found;
  const pickle = ['adapter_model.bin', 'pytorch_adapter.bin'].find((f) => fs.existsSync(path.join(dir, f)));
  if (pickle) throw new DeltaValidationError(name, [`${path.join(dir, pickle)}: PyTorch pickle weights are not accepted; save the adapter as safetensors (adapter_model.safetensors or adapter.safetensors)`]);
  throw new DeltaValidationError(name, [`${path.join(dir, 'adapter_model.safetensors')} not found (nor adapter.safetensors)`]);
}

/**
 * torch.save writes a zip archive ("PK\x03\x04"), its legacy format a pickle opening with its
 * magic number (PROTO 2, LONG1 of 10 bytes). Only a failed parse is checked, and a safetensors
 * file starting so would need a header of 67 MB (zip) or over the 100 MB limit (legacy).
 */
function looksLikePickle(bytes: Uint8Array): boolean {
  const starts = (magic: number[]) => magic.every((b, i) => bytes[i] === b);
  return starts([0x50, 0x4b, 0x03, 0x04]) || starts([0x80, 0x02, 0x8a, 0x0a]);
}
