/**
 * PEFT's `check_target_module_exists` (peft/tuners/tuners_utils.py), transcribed for the oracles
 * with JavaScript regexes (enough for the plain patterns tests use), independently of
 * src/deltas/peft/targets.ts:
 *   exclude_modules: a string is a full-match regex; a list excludes `key == k` or `key.endswith('.' + k)`;
 *   target_modules: a string is a full-match regex; a list targets `key == k` or `key.endswith('.' + k)`;
 *   layers_to_transform (list targets only): the first `.*?\.[^.]*\.(\d+)\.` index must be listed.
 * `target_modules: null` is resolved by the caller (PEFT's per-model-type defaults) before this runs.
 */
export interface TargetConfig {
  target_modules: string | string[];
  exclude_modules?: string | string[] | null;
  layers_to_transform?: number | number[] | null;
  layers_pattern?: string | string[] | null;
}

const fullMatch = (pattern: string, key: string) => new RegExp(`^(?:${pattern})$`).test(key);
const listMatch = (names: string[], key: string) => names.some((k) => key === k || key.endsWith(`.${k}`));

export function checkTargetModuleExists(config: TargetConfig, key: string): boolean {
  const exclude = config.exclude_modules;
  if (exclude) {
    if (typeof exclude === 'string' ? fullMatch(exclude, key) : listMatch(exclude, key)) return false;
  }
  const target = config.target_modules;
  if (typeof target === 'string') return fullMatch(target, key);
  if (target.includes(key)) return true;
  let found = listMatch(target, key);
  const layers = config.layers_to_transform;
  const usingLayers = layers !== null && layers !== undefined && (!Array.isArray(layers) || layers.length > 0);
  if (usingLayers && found) {
    if (config.layers_pattern) throw new Error('oracle: layers_pattern is not transcribed');
    const match = /^.*?\.[^.]*\.(\d+)\./.exec(key);
    found = match !== null && (Array.isArray(layers) ? layers.includes(Number(match[1])) : layers === Number(match[1]));
  }
  return found;
}
