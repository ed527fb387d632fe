/**
 * The tensors of an AdapterHub bottleneck adapter, matched to the backbone's layers as the
 * `adapters` library's loader matches them (loading.py AdapterLoader: every key of the adapter's
 * name, with or without the model's base prefix; keys the model has no parameter for are ignored).
 *
 * Key layout, per layer L and location (attention_adapters = mh_adapter, output_adapters = output_adapter):
 *   <layer path>.<location>.adapters.<name>.adapter_down.0.weight    [width, hidden]  (adapter_down.1 with ln_before,
 *   <layer path>.<location>.adapters.<name>.adapter_down.0.bias      [width]          whose LayerNorm is adapter_down.0
 *   <layer path>.<location>.adapters.<name>.adapter_up.weight        [hidden, width]   and also adapter_norm_before)
 *   <layer path>.<location>.adapters.<name>.adapter_up.bias          [hidden]
 *   <layer path>.<location>.adapters.<name>.adapter_norm_after.*     [hidden]          with ln_after
 *   <layer path>.<location>.adapters.<name>.scaling                  [1] or [hidden]   with scaling 'learned' / 'channel'
 * where the layer path is `model.layers.L` (llama, mistral, qwen2) or `transformer.h.L` (gpt2),
 * with or without its first segment.
 */
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { ParsedSafetensors } from '../../model/safetensors.js';
import { firstNonFinite } from '../peft-lora.js';
import type { BottleneckSettings } from './bottleneck-config.js';

export type Location = 'attention' | 'mlp';

/** One adapter module as the library holds it (nn.Linear layouts), at one layer and location. */
export interface BottleneckModule {
  layer: number;
  location: Location;
  width: number;
  /** adapter_down's Linear: [width, hidden] and [width]. */
  down: Float32Array;
  downBias: Float32Array;
  /** adapter_up: [hidden, width] and [hidden]. */
  up: Float32Array;
  upBias: Float32Array;
  /** The `scaling` parameter ([1] or [hidden]), or the configured float. */
  scale: Float32Array | number;
  lnBefore?: { weight: Float32Array; bias: Float32Array };
  lnAfter?: { weight: Float32Array; bias: Float32Array };
}

const LOCATION_KEYS: Record<string, Location> = { attention_adapters: 'attention', output_adapters: 'mlp' };
const PARAM = String.raw`adapter_down\.[01]\.(?:weight|bias)|adapter_up\.(?:weight|bias)|adapter_norm_(?:before|after)\.(?:weight|bias)|scaling|gate\.(?:weight|bias)`;
const KEY = new RegExp(String.raw`^(.+)\.(attention_adapters|output_adapters)\.adapters\.(.+)\.(${PARAM})$`);

/**
 * The module path of layer L's block: its output projection's path less `self_attn.o_proj` /
 * `attn.c_proj`.
 *
 * @example layerPath(gpt2Arch, 3) // 'transformer.h.3'
 */
export function layerPath(arch: ArchitectureSpec, layer: number): string {
  return arch.blocks[layer]!.o.modulePath.split('.').slice(0, -2).join('.');
}

/**
 * Every adapter module the config places, loaded and checked; problems (each naming its tensor)
 * and warnings (tensors ignored, as the library ignores them) go to the given lists.
 *
 * @example loadBottleneckModules(settings, weights, arch, 256, problems, warnings).length // 4
 */
export function loadBottleneckModules(settings: BottleneckSettings, weights: ParsedSafetensors, arch: ArchitectureSpec, maxWidth: number, problems: string[], warnings: string[]): BottleneckModule[] {
  const found = groupKeys(weights, arch, settings.name, problems, warnings);
  const modules: BottleneckModule[] = [];
  for (const { layer, location } of placements(settings, arch)) {
    const keys = found.get(`${layer}.${location}`) ?? new Map<string, string>();
    found.delete(`${layer}.${location}`);
    const width = settings.width(layer);
    if (width === undefined) problems.push(`adapter_config.json: config.reduction_factor has no entry for layer ${layer} and no "default" (the adapters library fails on it)`);
    const module = width === undefined ? undefined : loadModule({ layer, location, width, keys, weights, arch, settings, maxWidth, problems });
    if (module) modules.push(module);
    for (const key of keys.values()) warnings.push(`${key}: ignored (the adapter's config gives this module no such parameter; the adapters library ignores it too)`);
  }
  for (const keys of found.values()) for (const key of keys.values()) warnings.push(`${key}: ignored (the config places no adapter there: mh_adapter, output_adapter or leave_out; the adapters library ignores it too)`);
  return modules;
}

/** Where the library adds an adapter: every layer not in leave_out, after attention (mh_adapter) and after the MLP (output_adapter). */
function placements(settings: BottleneckSettings, arch: ArchitectureSpec): { layer: number; location: Location }[] {
  const out: { layer: number; location: Location }[] = [];
  for (let layer = 0; layer < arch.numLayers; layer++) {
    if (settings.leaveOut.has(layer)) continue;
    if (settings.mhAdapter) out.push({ layer, location: 'attention' });
    if (settings.outputAdapter) out.push({ layer, location: 'mlp' });
  }
  return out;
}

/** Adapter keys by `layer.location`, then parameter; one adapter name only; other keys are warnings. */
function groupKeys(weights: ParsedSafetensors, arch: ArchitectureSpec, configName: string | undefined, problems: string[], warnings: string[]): Map<string, Map<string, string>> {
  const layers = new Map<string, number>();
  for (let l = 0; l < arch.numLayers; l++) for (const path of [layerPath(arch, l), layerPath(arch, l).split('.').slice(1).join('.')]) layers.set(path, l);
  const matches: { key: string; at: string; name: string; param: string }[] = [];
  for (const key of weights.header.tensors.keys()) {
    const match = KEY.exec(key);
    const layer = match ? layers.get(match[1]!) : undefined;
    if (match && layer !== undefined) matches.push({ key, at: `${layer}.${LOCATION_KEYS[match[2]!]}`, name: match[3]!, param: match[4]! });
    else warnings.push(`${key}: ignored (not a bottleneck adapter parameter of a ${arch.family} layer; the adapters library ignores unexpected keys)`);
  }
  const names = [...new Set(matches.map((m) => m.name))].sort();
  const list = names.map((n) => `'${n.slice(0, 60)}'`).join(', ');
  if (names.length > 1) problems.push(`adapter.safetensors holds adapters of several names (${list}); upload one adapter`);
  else if (names.length === 1 && configName !== undefined && names[0] !== configName) problems.push(`adapter.safetensors holds adapter ${list}, but adapter_config.json names it '${configName.slice(0, 60)}' (the adapters library would load none of its tensors)`);
  const found = new Map<string, Map<string, string>>();
  if (names.length > 1) return found;
  for (const { key, at, param } of matches) {
    const params = found.get(at) ?? new Map<string, string>();
    if (params.has(param)) problems.push(`${key}: ${param} of the same layer is given twice (also as ${params.get(param)})`);
    params.set(param, key);
    found.set(at, params);
  }
  return found;
}

interface ModuleInput {
  layer: number;
  location: Location;
  width: number;
  /** This module's keys by parameter; the ones used are removed. */
  keys: Map<string, string>;
  weights: ParsedSafetensors;
  arch: ArchitectureSpec;
  settings: BottleneckSettings;
  maxWidth: number;
  problems: string[];
}

function loadModule(m: ModuleInput): BottleneckModule | undefined {
  const H = m.arch.hiddenSize;
  const before = m.problems.length;
  const take = (param: string, shape: number[]) => takeTensor(m, param, shape);
  const downParam = m.settings.lnBefore ? 'adapter_down.1' : 'adapter_down.0';
  if (m.width > m.maxWidth) m.problems.push(`${m.keys.get(`${downParam}.weight`) ?? `layer ${m.layer} ${m.location} adapter`}: bottleneck width ${m.width} (hidden_size ${H} // reduction_factor ${m.settings.reductionFactor(m.layer)}) exceeds max bottleneck ${m.maxWidth}`);
  const down = take(`${downParam}.weight`, [m.width, H]);
  const downBias = take(`${downParam}.bias`, [m.width]);
  const up = take('adapter_up.weight', [H, m.width]);
  const upBias = take('adapter_up.bias', [H]);
  const scaling = m.settings.scaling;
  const scale = typeof scaling === 'number' ? scaling : take('scaling', scaling === 'learned' ? [1] : [H]);
  const lnBefore = m.settings.lnBefore ? takeLayerNorm(m) : undefined;
  const lnAfter = m.settings.lnAfter ? { weight: take('adapter_norm_after.weight', [H]), bias: take('adapter_norm_after.bias', [H]) } : undefined;
  if (m.problems.length > before) return undefined;
  return { layer: m.layer, location: m.location, width: m.width, down: down!, downBias: downBias!, up: up!, upBias: upBias!, scale: scale!, lnBefore: lnBefore as BottleneckModule['lnBefore'], lnAfter: lnAfter as BottleneckModule['lnAfter'] };
}

/**
 * With ln_before, the LayerNorm is both `adapter_norm_before` and `adapter_down.0` (one module
 * registered twice); load_state_dict visits adapter_down last, so its copy wins when both are given.
 */
function takeLayerNorm(m: ModuleInput): { weight?: Float32Array; bias?: Float32Array } {
  const out: { weight?: Float32Array; bias?: Float32Array } = {};
  for (const part of ['weight', 'bias'] as const) {
    const alias = `adapter_norm_before.${part}`;
    const param = m.keys.has(`adapter_down.0.${part}`) || !m.keys.has(alias) ? `adapter_down.0.${part}` : alias;
    out[part] = takeTensor(m, param, [m.arch.hiddenSize]);
    if (param !== alias && m.keys.has(alias)) m.keys.delete(alias);
  }
  return out;
}

/** One parameter's tensor, checked for presence, shape, dtype and finite values. */
function takeTensor(m: ModuleInput, param: string, shape: number[]): Float32Array | undefined {
  const key = m.keys.get(param);
  if (key === undefined) {
    m.problems.push(`layer ${m.layer} ${m.location === 'attention' ? 'attention_adapters' : 'output_adapters'}: ${param} is missing (the adapters library would leave it at its random initialisation)`);
    return undefined;
  }
  m.keys.delete(param);
  const entry = m.weights.header.tensors.get(key)!;
  if (!['F32', 'F16', 'BF16'].includes(entry.dtype)) {
    m.problems.push(`${key}: dtype ${entry.dtype} is not supported (F32, F16, BF16)`);
    return undefined;
  }
  if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
    const why = param.startsWith('adapter_down') || param.startsWith('adapter_up') ? ` (hidden_size ${m.arch.hiddenSize} // reduction_factor ${m.settings.reductionFactor(m.layer)} = ${m.width})` : '';
    m.problems.push(`${key}: shape [${entry.shape}], expected [${shape}]${why}`);
    return undefined;
  }
  const data = m.weights.view(key);
  const bad = firstNonFinite(data);
  if (bad >= 0) {
    m.problems.push(`${key}: value at index ${bad} is not finite (${data[bad]})`);
    return undefined;
  }
  return data;
}
