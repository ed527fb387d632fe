/**
 * Which modules an adapter applies to, decided as PEFT decides it (peft/tuners/tuners_utils.py,
 * `check_target_module_exists`, and `get_pattern_key` for rank/alpha patterns), but with patterns
 * compiled by a linear-time matcher: the patterns are chosen by whoever uploads the adapter, and a
 * backtracking regex like `(\w|.)*Z` once held the loader for ~50 s.
 *
 * PEFT's rules, on module paths such as `model.layers.3.self_attn.q_proj`:
 * - `exclude_modules`: a string is a full-match regex; a list excludes exact names and `.name` suffixes;
 * - `target_modules`: a string is a full-match regex (`all-linear`, any case, means every linear
 *   layer but the output head); a list targets exact names and `.name` suffixes; null means
 *   PEFT's default list for the model type;
 * - `layers_to_transform` (with `layers_pattern`) keeps only list-targeted modules in those layers;
 * - a `rank_pattern` / `alpha_pattern` key K applies where `(.*\.)?(K)` matches the whole path;
 *   the first such key in the file's order wins.
 */
import type { ConfigFields } from './config-fields.js';
import { compilePattern, PatternError, type LinearPattern } from './regex.js';

/** Longest pattern a config may carry (PEFT has no limit; ours keeps matching cheap). */
export const MAX_PATTERN_LENGTH = 256;

export interface TargetRules {
  /** Regex, or names/suffixes; 'all-linear' resolved by the caller into `allLinear`. */
  target: LinearPattern | string[];
  exclude: LinearPattern | string[] | null;
  layers: number[] | null;
  layersPattern: LinearPattern[] | null;
}

/**
 * Reads and compiles the targeting fields; problems go to `fields`. `defaults` is PEFT's list for
 * the model type, used when target_modules is null; `linear` lists every linear module path.
 */
export function readTargetRules(fields: ConfigFields, defaults: string[] | undefined, linear: readonly string[], field = 'target_modules'): TargetRules {
  const limits = { maxItems: 512, maxLength: MAX_PATTERN_LENGTH };
  const rawTarget = fields.stringOrList(field, limits);
  let target: TargetRules['target'];
  if (rawTarget === null) {
    if (!defaults) fields.problems.push(`${field} is null and PEFT has no default targets for this model type; list them`);
    target = defaults ?? [];
  } else if (typeof rawTarget === 'string' && rawTarget.toLowerCase() === 'all-linear') target = [...linear];
  else target = typeof rawTarget === 'string' ? compileField(fields, field, rawTarget) : rawTarget;
  const rawExclude = fields.stringOrList('exclude_modules', limits);
  const exclude = typeof rawExclude === 'string' ? compileField(fields, 'exclude_modules', rawExclude) : rawExclude;
  const layers = readLayers(fields);
  const rawPattern = fields.stringOrList('layers_pattern', { maxItems: 16, maxLength: MAX_PATTERN_LENGTH });
  const patterns = rawPattern === null || rawPattern.length === 0 ? null : (typeof rawPattern === 'string' ? [rawPattern] : rawPattern).map((p, i) => compileField(fields, `layers_pattern[${i}]`, p)).filter((p): p is LinearPattern => !Array.isArray(p));
  if (typeof rawTarget === 'string' && (layers !== null || patterns !== null)) fields.problems.push(`layers_to_transform and layers_pattern cannot be used when ${field} is a string (PEFT refuses it)`);
  if (patterns !== null && layers === null) fields.problems.push('layers_pattern needs layers_to_transform (PEFT refuses it)');
  return { target, exclude, layers, layersPattern: patterns };
}

/** Whether PEFT would put an adapter layer on `key` (a module path). */
export function isTargeted(rules: TargetRules, key: string): boolean {
  if (rules.exclude !== null && matchesNameRule(rules.exclude, key)) return false;
  if (!Array.isArray(rules.target)) return rules.target.fullMatch(key);
  if (!matchesNameRule(rules.target, key)) return false;
  if (rules.layers === null) return true;
  const layer = layerIndex(key, rules.layersPattern);
  return layer !== undefined && rules.layers.includes(layer);
}

/** A compiled rank_pattern/alpha_pattern: the first key whose `(.*\.)?(K)` matches wins. */
export type PatternTable = { key: string; pattern: LinearPattern; value: number }[];

export function compilePatternTable(fields: ConfigFields, field: string, entries: [string, number][]): PatternTable {
  const table: PatternTable = [];
  for (const [key, value] of entries) {
    const pattern = compileField(fields, `${field} key '${key.slice(0, 40)}'`, `(.*\\.)?(${key})`);
    if (!Array.isArray(pattern)) table.push({ key, pattern, value });
  }
  return table;
}

export function patternValue(table: PatternTable, modulePath: string): number | undefined {
  return table.find((entry) => entry.pattern.fullMatch(modulePath))?.value;
}

/**
 * Most NFA states all of one config's patterns may have together. Matching costs up to
 * (path length + 1) × states per module path, and a config may carry over 500 patterns
 * (target, exclude, layers_pattern, 256 rank_pattern and 256 alpha_pattern keys): at the
 * per-pattern cap alone, one upload held the delta loader for minutes. 512 keys naming
 * modules outright (~36 states each) still fit.
 */
export const MAX_CONFIG_PATTERN_STATES = 32_768;

/** States compiled so far per config being read. */
const statesSpent = new WeakMap<ConfigFields, number>();

function compileField(fields: ConfigFields, field: string, source: string): LinearPattern | string[] {
  const before = statesSpent.get(fields) ?? 0;
  // Over the budget already (and reported once): later patterns are not even compiled.
  if (before > MAX_CONFIG_PATTERN_STATES) return [];
  let pattern: LinearPattern;
  try {
    pattern = compilePattern(source, { maxLength: MAX_PATTERN_LENGTH + 16 });
  } catch (err) {
    if (!(err instanceof PatternError)) throw err;
    fields.problems.push(`${field}: ${err.message}`);
    return [];
  }
  const spent = before + pattern.stateCount;
  statesSpent.set(fields, spent);
  if (spent <= MAX_CONFIG_PATTERN_STATES) return pattern;
  fields.problems.push(`${field}: the config's patterns need over ${MAX_CONFIG_PATTERN_STATES} NFA states together (${spent} with this one), the limit for all of them; simplify counted repeats such as {0,70}`);
  return [];
}

function matchesNameRule(rule: LinearPattern | string[], key: string): boolean {
  if (!Array.isArray(rule)) return rule.fullMatch(key);
  return rule.some((name) => key === name || key.endsWith(`.${name}`));
}

function readLayers(fields: ConfigFields): number[] | null {
  const value = fields.config['layers_to_transform'];
  if (value === undefined || value === null) return null;
  const list = typeof value === 'number' ? [value] : value;
  if (!Array.isArray(list) || list.length > 4096 || !list.every((v) => Number.isInteger(v) && v >= 0)) {
    fields.problems.push('layers_to_transform must be a non-negative integer or a list of them');
    return null;
  }
  // PEFT treats an empty list as "no layer restriction".
  return list.length === 0 ? null : (list as number[]);
}

/**
 * The layer index PEFT reads from a module path: the first numeric segment that has at least two
 * segments before it (`.*?\.[^.]*\.(\d+)\.`), or with `layers_pattern`, the first numeric segment
 * whose preceding segments end with one the pattern matches (`.*?\.{pattern}\.(\d+)\.`).
 */
export function layerIndex(key: string, patterns: LinearPattern[] | null): number | undefined {
  const segments = key.split('.');
  for (let i = 1; i < segments.length - 1; i++) {
    if (!/^\d+$/.test(segments[i]!)) continue;
    if (patterns === null) {
      if (i >= 2) return Number(segments[i]);
      continue;
    }
    // The pattern must match some run of whole segments ending right before the index, and
    // PEFT's leading `.*?\.` needs at least one segment before that run.
    for (let start = 1; start < i; start++) {
      const run = segments.slice(start, i).join('.');
      if (patterns.some((p) => p.fullMatch(run))) return Number(segments[i]);
    }
  }
  return undefined;
}
