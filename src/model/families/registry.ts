import type { ArchitectureSpec } from '../architecture.js';
import { ModelLoadError } from '../errors.js';

/** A raw Hugging Face config.json. */
export type HfConfig = Record<string, any>;

/** Maps a config (and the checkpoint's tensor names, for prefix/tying quirks) to an architecture. */
export type FamilyDescriber = (config: HfConfig, tensorNames: ReadonlySet<string>) => ArchitectureSpec;

const families = new Map<string, FamilyDescriber>();

/** Families register themselves on import; a model_type registered twice is a programming error. */
export function registerFamily(modelTypes: string[], describe: FamilyDescriber): void {
  for (const type of modelTypes) {
    if (families.has(type)) throw new Error(`model family ${type} registered twice`);
    families.set(type, describe);
  }
}

export function describeArchitecture(config: HfConfig, tensorNames: ReadonlySet<string>, configPath: string): ArchitectureSpec {
  const type = String(config.model_type ?? '');
  const describe = families.get(type);
  if (!describe) {
    const arch = Array.isArray(config.architectures) ? config.architectures.join(', ') : 'unknown';
    throw new ModelLoadError(
      `${configPath}: unsupported architecture model_type '${type}' (${arch}); supported: ${[...families.keys()].sort().join(', ')}`,
    );
  }
  return describe(config, tensorNames);
}

/** Reads a required positive integer from a config, naming the file's key when absent. */
export function requireInt(config: HfConfig, key: string): number {
  const value = config[key];
  if (!Number.isInteger(value) || value <= 0) throw new ModelLoadError(`config.json: '${key}' must be a positive integer, got ${JSON.stringify(value)}`);
  return value;
}

/** eos_token_id may be a number or a list in both config.json and generation_config.json. */
export function tokenIds(value: unknown): number[] {
  if (typeof value === 'number') return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === 'number');
  return [];
}
