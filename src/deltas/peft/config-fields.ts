/**
 * Typed reads of an adapter_config.json that collect every problem instead of stopping at the
 * first: a tenant fixing an upload sees all of them at once. Each read returns a usable value
 * (the default when the field is bad), so validation can continue past a bad field.
 */
export type JsonObject = Record<string, unknown>;

export interface NumberRule {
  /** Default when the field is absent or null. */
  fallback: number;
  integer?: boolean;
  /** Inclusive bounds. */
  min?: number;
  max?: number;
  /** Exclusive lower bound (e.g. a scale that must be positive). */
  above?: number;
}

export class ConfigFields {
  readonly problems: string[] = [];

  constructor(readonly config: JsonObject) {}

  /** Whether the field is present with a non-null value. */
  has(field: string): boolean {
    return this.config[field] !== undefined && this.config[field] !== null;
  }

  number(field: string, rule: NumberRule): number {
    const value = this.config[field];
    if (value === undefined || value === null) return rule.fallback;
    const kind = rule.integer ? 'an integer' : 'a finite number';
    if (typeof value !== 'number' || !Number.isFinite(value) || (rule.integer && !Number.isInteger(value))) return this.fail(field, `must be ${kind}, got ${show(value)}`, rule.fallback);
    if (rule.min !== undefined && value < rule.min) return this.fail(field, `must be at least ${rule.min}, got ${value}`, rule.fallback);
    if (rule.max !== undefined && value > rule.max) return this.fail(field, `must be at most ${rule.max}, got ${value}`, rule.fallback);
    if (rule.above !== undefined && !(value > rule.above)) return this.fail(field, `must be greater than ${rule.above}, got ${value}`, rule.fallback);
    return value;
  }

  boolean(field: string, fallback: boolean): boolean {
    const value = this.config[field];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'boolean') return this.fail(field, `must be true or false, got ${show(value)}`, fallback);
    return value;
  }

  /** A string that must be one of `allowed` (compared exactly). */
  oneOf<T extends string>(field: string, allowed: readonly T[], fallback: T): T {
    const value = this.config[field];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) return this.fail(field, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${show(value)}`, fallback);
    return value as T;
  }

  /** A string, or a list of strings (PEFT's `Union[list[str], str]` fields), or null. */
  stringOrList(field: string, limits: { maxItems: number; maxLength: number }): string | string[] | null {
    const value = this.config[field];
    if (value === undefined || value === null) return null;
    if (typeof value === 'string') return value.length > limits.maxLength ? this.fail(field, `is ${value.length} characters long; at most ${limits.maxLength}`, null) : value;
    if (!Array.isArray(value)) return this.fail(field, `must be a string or a list of strings, got ${show(value)}`, null);
    if (value.length > limits.maxItems) return this.fail(field, `has ${value.length} entries; at most ${limits.maxItems}`, null);
    const bad = value.findIndex((v) => typeof v !== 'string' || v.length === 0 || v.length > limits.maxLength);
    if (bad >= 0) return this.fail(field, `[${bad}] must be a non-empty string of at most ${limits.maxLength} characters, got ${show(value[bad])}`, null);
    return value as string[];
  }

  /** An object of string keys to numbers (rank_pattern, alpha_pattern), or null. */
  numberMap(field: string, rule: Omit<NumberRule, 'fallback'> & { maxEntries: number; maxKeyLength: number }): [string, number][] {
    const value = this.config[field];
    if (value === undefined || value === null) return [];
    if (typeof value !== 'object' || Array.isArray(value)) return this.fail(field, `must be an object of patterns to numbers, got ${show(value)}`, []);
    const entries = Object.entries(value as JsonObject);
    if (entries.length > rule.maxEntries) return this.fail(field, `has ${entries.length} entries; at most ${rule.maxEntries}`, []);
    const out: [string, number][] = [];
    for (const [key, v] of entries) {
      const entry = new ConfigFields({ [key]: v });
      const n = entry.number(key, { ...rule, fallback: NaN });
      if (key.length === 0 || key.length > rule.maxKeyLength) this.problems.push(`${field}: key ${show(key.slice(0, 40))} must be 1-${rule.maxKeyLength} characters`);
      else if (entry.problems.length) this.problems.push(...entry.problems.map((p) => `${field}.${p}`));
      else out.push([key, n]);
    }
    return out;
  }

  /** A field deltaserve does not implement: accepted only at its default (`isDefault`). */
  unsupported(field: string, isDefault: (value: unknown) => boolean, why: string): void {
    const value = this.config[field];
    if (value !== undefined && value !== null && !isDefault(value)) this.problems.push(`${field}: ${why} (got ${show(value)})`);
  }

  fail<T>(field: string, message: string, fallback: T): T {
    this.problems.push(`${field} ${message}`);
    return fallback;
  }
}

/** A value as a message shows it: `"abc" (a string)`, `1e+38`, `[…] (a list)`. */
export function show(value: unknown): string {
  if (typeof value === 'string') return `${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)} (a string)`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'an object' : typeof value;
}

/** Parses adapter_config.json text as a JSON object, or returns the problem. */
export function parseConfigObject(text: string): JsonObject | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return `adapter_config.json is not valid JSON: ${(err as Error).message}`;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'adapter_config.json must be a JSON object';
  return value as JsonObject;
}
