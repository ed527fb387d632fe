/**
 * (IA)³ (PEFT `IA3`): learned vectors that rescale activations. Per targeted linear layer one
 * vector `ia3_l`: [out, 1] multiplies the layer's output, bias included, or, for a module that
 * `feedforward_modules` names, [1, in] multiplies its input before the weight (PEFT's
 * tuners/ia3/layer.py, `Linear.forward`).
 *
 * Slot layout, fixed by the backbone alone: one tensor per block, `ia3.layers.<i>` [width], that
 * holds, for every projection of the block in allProjections order, its input scales [in] then
 * its output scales [out]; neutral 1. A delta fills the vectors its config says and leaves the
 * rest at 1, so one delta may scale the input of a module another delta scales the output of.
 * Batched semantics, with s(t) the slot of t's row, or an appended ones row when it has none:
 *   x[t] *= in[s(t)] before the weight,  y[t] *= out[s(t)] after weight and bias.
 * Per block the graph has one Concat (the ones row), one Gather by `ia3_rows` [T] and one Split
 * into the block's vectors, then one Mul per projection and direction: these run in every pass,
 * with or without IA3 rows, so they are kept to the fewest ops. A row without IA3 is multiplied
 * by an exact 1.0 (bit-identical), and every token reads only its own row's vector (selection).
 */
import type { ArchitectureSpec } from '../../model/architecture.js';
import { allProjections } from '../../model/architecture.js';
import type { DeltaLowering, HookContext } from '../../model/delta-hooks.js';
import { inlineTensor } from '../../graph/ir.js';
import type { ParsedSafetensors } from '../../model/safetensors.js';
import { DeltaValidationError } from '../errors.js';
import { registerDeltaKind, type DeltaKind, type FeedInput, type FeedTensor, type ParsedDelta, type SlotTensor } from '../kind.js';
import { ConfigFields, show, type JsonObject } from '../peft/config-fields.js';
import { firstNonFinite } from '../peft-lora.js';
import { compilePattern, PatternError, type LinearPattern } from '../peft/regex.js';
import { isTargeted, MAX_PATTERN_LENGTH, readTargetRules, type TargetRules } from '../peft/targets.js';

export const ia3Stack = (layer: number) => `ia3.layers.${layer}`;
const ROWS = 'ia3_rows';

/** Where a projection's two vectors sit in its block's slot tensor (and in the block's Split). */
interface Place {
  layer: number;
  /** Split output 2·index is the input scale, 2·index + 1 the output scale. */
  index: number;
  inOffset: number;
  outOffset: number;
}

/**
 * Each block's width, its Split sizes (in, out per projection) and each projection's place.
 *
 * @example ia3Layout(arch).places.get('model.layers.0.self_attn.k_proj') // { layer: 0, index: 1, inOffset: 128, outOffset: 192 } (hidden 64)
 */
export function ia3Layout(arch: ArchitectureSpec): { widths: number[]; sizes: number[][]; places: Map<string, Place> } {
  const places = new Map<string, Place>();
  const sizes = allProjections(arch).map((block, layer) => {
    let offset = 0;
    return block.flatMap((p, index) => {
      places.set(p.modulePath, { layer, index, inOffset: offset, outOffset: offset + p.inFeatures });
      offset += p.inFeatures + p.outFeatures;
      return [p.inFeatures, p.outFeatures];
    });
  });
  return { widths: sizes.map((s) => s.reduce((a, b) => a + b, 0)), sizes, places };
}

export const ia3: DeltaKind = {
  name: 'ia3',
  family: 'addition',
  format: "PEFT peft_type 'IA3'",
  detect: (config) => config['peft_type'] === 'IA3',

  parse({ name, config, weights, arch }): ParsedDelta {
    const { vectors, warnings } = parsePeftIa3(name, config, weights, arch);
    const feedforward = [...vectors.values()].filter((v) => v.feedforward).length;
    const params = [...vectors.values()].reduce((n, v) => n + v.values.length, 0);
    return { kind: 'ia3', name, tensors: toSlotLayout(arch, vectors), virtualTokens: 0, summary: { modules: vectors.size, feedforward, params }, warnings };
  },

  slotTensors(arch): SlotTensor[] {
    return ia3Layout(arch).widths.map((width, layer) => ({ name: ia3Stack(layer), length: width, neutral: 1, dims: [width] }));
  },

  lowering: (arch) => ia3Lowering(arch),

  /** Each token's slot, or slotCount (the ones row the graph appends) when its row has no IA3. */
  feeds({ tokenSlots, slotCount }: FeedInput): FeedTensor[] {
    return [{ name: ROWS, dtype: 'int64', data: Array.from(tokenSlots, (s) => (s < 0 ? slotCount : s)), dims: [tokenSlots.length] }];
  },
};

function ia3Lowering(arch: ArchitectureSpec): DeltaLowering {
  const { widths, sizes, places } = ia3Layout(arch);
  // Split outputs per graph under construction, built at the first projection of each block.
  const built = new WeakMap<HookContext, Map<number, string[]>>();
  const scales = (ctx: HookContext, layer: number): string[] => {
    let blocks = built.get(ctx);
    if (!blocks) built.set(ctx, (blocks = new Map()));
    let parts = blocks.get(layer);
    if (!parts) blocks.set(layer, (parts = blockScales(ctx, layer, widths[layer]!, sizes[layer]!)));
    return parts;
  };
  return {
    kind: 'ia3',
    projectionInput(ctx, p, x) {
      const place = places.get(p.modulePath)!;
      return ctx.b.op1('Mul', [x, scales(ctx, place.layer)[2 * place.index]!]); // [T, in]
    },
    projectionOutput(ctx, p, _x, y) {
      const place = places.get(p.modulePath)!;
      return ctx.b.op1('Mul', [y, scales(ctx, place.layer)[2 * place.index + 1]!]); // [T, out]
    },
  };
}

/** One block's vectors for every token: the slot stack with a ones row, gathered by ia3_rows, split. */
function blockScales(ctx: HookContext, layer: number, width: number, sizes: number[]): string[] {
  const { b } = ctx;
  const stack = ctx.input(ia3Stack(layer), 'float32', ['ia3_slots', width]); // [S, width]
  const rows = ctx.input(ROWS, 'int64', ['tokens']); // [T]
  const ones = ctx.shared(`ia3.ones.${width}`, () => b.initializer('ia3_ones', inlineTensor('float32', [1, width], new Float32Array(width).fill(1)))); // [1, width]
  const table = b.op1('Concat', [stack, ones], { axis: 0 }); // [S + 1, width]
  const perToken = b.op1('Gather', [table, rows], { axis: 0 }); // [T, width]
  return b.op('Split', [perToken, b.constant('int64', [sizes.length], sizes)], { axis: 1 }, { outputs: sizes.length }); // 2P × [T, in | out]
}

/**
 * A delta's vectors in slot layout: one block tensor (ones where the delta sets nothing) for every
 * block it touches, all views of one buffer (one allocation, one transfer between threads).
 *
 * @example toSlotLayout(arch, new Map([['model.layers.1.mlp.down_proj', { feedforward: true, values }]])).keys() // ['ia3.layers.1']
 */
export function toSlotLayout(arch: ArchitectureSpec, vectors: ReadonlyMap<string, Ia3Vector>): Map<string, Float32Array> {
  const { widths, places } = ia3Layout(arch);
  const layers = [...new Set([...vectors.keys()].map((path) => places.get(path)!.layer))].sort((a, b) => a - b);
  const buffer = new Float32Array(layers.reduce((n, l) => n + widths[l]!, 0)).fill(1);
  const out = new Map<string, Float32Array>();
  let offset = 0;
  for (const layer of layers) out.set(ia3Stack(layer), buffer.subarray(offset, (offset += widths[layer]!)));
  for (const [path, vector] of vectors) {
    const place = places.get(path)!;
    out.get(ia3Stack(place.layer))!.set(vector.values, vector.feedforward ? place.inOffset : place.outOffset);
  }
  return out;
}

// ---------------------------------------------------------------------------
// parsing: PEFT's IA3Config (tuners/ia3/config.py) and IA3Model (tuners/ia3/model.py)

/** One module's vector: input scales [in] when it is a feed-forward module, else output scales [out]. */
export interface Ia3Vector {
  feedforward: boolean;
  values: Float32Array;
}

/** PEFT's defaults per model type (utils/constants.py, TRANSFORMERS_MODELS_TO_IA3_*_MAPPING), for a null field. */
export const IA3_DEFAULT_TARGETS: Record<string, string[]> = { llama: ['k_proj', 'v_proj', 'down_proj'], mistral: ['k_proj', 'v_proj', 'down_proj'], qwen2: ['q_proj', 'v_proj', 'down_proj'], gpt2: ['c_attn', 'mlp.c_proj'] };
export const IA3_DEFAULT_FEEDFORWARD: Record<string, string[]> = { llama: ['down_proj'], mistral: ['down_proj'], qwen2: ['down_proj'], gpt2: ['mlp.c_proj'] };

/** IA3Config's fields and its bases' (peft/config.py); PEFT drops any other key with a warning. */
const KNOWN_FIELDS = new Set(['peft_type', 'task_type', 'auto_mapping', 'peft_version', 'base_model_name_or_path', 'revision', 'inference_mode', 'target_modules', 'exclude_modules', 'feedforward_modules', 'fan_in_fan_out', 'modules_to_save', 'init_ia3_weights']);
const TASK_TYPES = ['SEQ_CLS', 'SEQ_2_SEQ_LM', 'CAUSAL_LM', 'TOKEN_CLS', 'QUESTION_ANS', 'FEATURE_EXTRACTION'] as const;

interface Ia3Settings {
  targets: TargetRules;
  /** A full-match regex, or names any module path merely ends with (PEFT's `key.endswith(name)`, no dot). */
  feedforward: LinearPattern | string[];
  /** init_ia3_weights: a targeted module without a tensor keeps ones (true) or PEFT's torch.randn (false). */
  initOnes: boolean;
}

/**
 * Validates a PEFT IA3 adapter against the backbone, collecting every problem, and returns each
 * targeted module's vector. Modules are targeted as PEFT targets them (peft/targets.ts); tensors
 * of modules not targeted, or not in the backbone, are ignored as PEFT's
 * `load_state_dict(strict=False)` ignores them, and reported in `warnings`.
 *
 * @example parsePeftIa3('acme/ia3', config, weights, arch).vectors.get('model.layers.0.mlp.down_proj')?.feedforward // true
 */
export function parsePeftIa3(name: string, raw: JsonObject, weights: ParsedSafetensors, arch: ArchitectureSpec): { vectors: Map<string, Ia3Vector>; warnings: string[] } {
  const warnings: string[] = [];
  const unknown = Object.keys(raw).filter((k) => !KNOWN_FIELDS.has(k));
  if (unknown.length) warnings.push(`adapter_config.json: ${unknown.slice(0, 16).map((k) => `'${k.slice(0, 40)}'`).join(', ')} ignored: not fields of PEFT's IA3Config, which drops them too`);
  const fields = new ConfigFields(Object.fromEntries(Object.entries(raw).filter(([k]) => KNOWN_FIELDS.has(k))));
  const settings = readIa3Config(fields, arch, warnings);
  if (fields.problems.length) throw new DeltaValidationError(name, fields.problems.map((p) => `adapter_config.json: ${p}`));
  const targeted = arch.modules.filter((m) => isTargeted(settings.targets, m.path));
  if (targeted.length === 0) throw new DeltaValidationError(name, ['adapter_config.json: target_modules selects no module of the backbone (PEFT refuses such an adapter too)']);
  const problems: string[] = [];
  const present = ia3TensorModules(weights.header.tensors.keys(), (key) => warnings.push(`${key}: ignored (not an ia3_l vector; PEFT ignores unexpected keys)`));
  const projections = new Map(allProjections(arch).flat().map((p) => [p.modulePath, p]));
  const vectors = new Map<string, Ia3Vector>();
  for (const module of targeted) {
    const projection = projections.get(module.path);
    if (!projection) {
      problems.push(`target_modules selects '${module.path}', a${module.kind === 'head' ? 'n output head' : ` ${module.kind}`} module; IA3 applies to the transformer blocks' linear layers only`);
      continue;
    }
    const feedforward = isFeedforward(settings.feedforward, module.path);
    if (!present.delete(module.path)) {
      if (settings.initOnes) warnings.push(`${module.path}: targeted but has no ia3_l tensor; it is left unchanged (PEFT initialises ia3_l to ones)`);
      else problems.push(`${ia3Key(module.path)}: missing, and init_ia3_weights is false, so PEFT would leave this module's vector random`);
      continue;
    }
    const expected = feedforward ? [1, projection.inFeatures] : [projection.outFeatures, 1];
    const values = loadVector(ia3Key(module.path), expected, feedforward, weights, problems);
    if (values) vectors.set(module.path, { feedforward, values });
  }
  for (const path of present) warnings.push(`${ia3Key(path)}: ignored: ${arch.modules.some((m) => m.path === path) ? 'target_modules does not select its module' : 'the backbone has no such module'} (PEFT ignores it too)`);
  if (!problems.length && vectors.size === 0) problems.push('adapter_model.safetensors holds no ia3_l tensor for the modules adapter_config.json targets');
  if (problems.length) throw new DeltaValidationError(name, problems);
  return { vectors, warnings };
}

const ia3Key = (modulePath: string) => `base_model.model.${modulePath}.ia3_l`;

function readIa3Config(fields: ConfigFields, arch: ArchitectureSpec, warnings: string[]): Ia3Settings {
  const peftType = fields.config['peft_type'];
  if (peftType !== 'IA3') fields.problems.push(`peft_type ${typeof peftType === 'string' ? `'${peftType.slice(0, 40)}'` : show(peftType)} is not supported here (expected 'IA3')`);
  fields.oneOf('task_type', TASK_TYPES, 'CAUSAL_LM');
  fields.boolean('inference_mode', false);
  const initOnes = fields.boolean('init_ia3_weights', true);
  // PEFT overrides fan_in_fan_out to match the layer (model.py, _create_new_module); it only matters when merging.
  const conv1d = arch.blocks[0]?.o.layout === 'in_out';
  const fanInFanOut = fields.config['fan_in_fan_out'];
  if (fanInFanOut === !conv1d) warnings.push(`fan_in_fan_out: ${String(fanInFanOut)} ignored: PEFT sets it to ${conv1d} for ${conv1d ? 'Conv1D' : 'nn.Linear'} layers`);
  else fields.boolean('fan_in_fan_out', conv1d);
  const empty = (v: unknown) => Array.isArray(v) && v.length === 0;
  fields.unsupported('modules_to_save', empty, 'modules_to_save is not supported (a delta may only scale linear layers)');
  const linear = arch.modules.filter((m) => m.kind === 'linear').map((m) => m.path);
  const targets = readTargetRules(fields, IA3_DEFAULT_TARGETS[arch.family], linear);
  return { targets, feedforward: readFeedforward(fields, arch.family), initOnes };
}

/** feedforward_modules: null means PEFT's default; a list must be a subset of a listed target_modules (IA3Config.__post_init__). */
export function readFeedforward(fields: ConfigFields, family: string): LinearPattern | string[] {
  const raw = fields.stringOrList('feedforward_modules', { maxItems: 512, maxLength: MAX_PATTERN_LENGTH });
  if (raw === null) {
    if (fields.has('feedforward_modules')) return []; // malformed: already a problem
    const defaults = IA3_DEFAULT_FEEDFORWARD[family];
    if (!defaults) fields.problems.push('feedforward_modules is null and PEFT has no default for this model type; list them');
    return defaults ?? [];
  }
  if (typeof raw === 'string') {
    try {
      return compilePattern(raw, { maxLength: MAX_PATTERN_LENGTH });
    } catch (err) {
      if (!(err instanceof PatternError)) throw err;
      fields.problems.push(`feedforward_modules: ${err.message}`);
      return [];
    }
  }
  const targets = fields.config['target_modules'];
  const outside = Array.isArray(targets) ? raw.filter((name) => !targets.includes(name)) : [];
  if (outside.length) fields.problems.push(`feedforward_modules must be a subset of target_modules (PEFT refuses it): ${outside.slice(0, 8).map((n) => `'${n}'`).join(', ')} not in target_modules`);
  return raw;
}

/** PEFT's `_check_target_module_feedforward`: a string full-matches; a list matches any path that ends with a name. */
export function isFeedforward(rule: LinearPattern | string[], modulePath: string): boolean {
  return Array.isArray(rule) ? rule.some((name) => modulePath.endsWith(name)) : rule.fullMatch(modulePath);
}

/** Module paths that have an ia3_l tensor (`base_model.model.<module>.ia3_l`); every other key goes to `ignore`. */
function ia3TensorModules(keys: Iterable<string>, ignore: (key: string) => void): Set<string> {
  const modules = new Set<string>();
  for (const key of keys) {
    const match = /^base_model\.model\.(.+)\.ia3_l$/.exec(key);
    if (match) modules.add(match[1]!);
    else ignore(key);
  }
  return modules;
}

/** The vector, flattened, if its dtype, shape (what load_state_dict would accept) and values are sound. */
function loadVector(key: string, expected: number[], feedforward: boolean, weights: ParsedSafetensors, problems: string[]): Float32Array | undefined {
  const entry = weights.header.tensors.get(key)!;
  const before = problems.length;
  if (!['F32', 'F16', 'BF16', 'F64'].includes(entry.dtype)) problems.push(`${key}: dtype ${entry.dtype} is not supported (F32, F16, BF16, F64)`);
  if (entry.shape.length !== 2 || entry.shape[0] !== expected[0] || entry.shape[1] !== expected[1]) {
    const flipped = entry.shape.length === 2 && entry.shape[0] === expected[1] && entry.shape[1] === expected[0];
    const hint = flipped ? `: that is the shape of ${feedforward ? 'an output' : 'an input (feed-forward)'} vector, and feedforward_modules ${feedforward ? 'includes' : 'does not include'} this module` : '';
    problems.push(`${key}: shape [${entry.shape}], expected [${expected}]${hint}`);
  }
  if (problems.length > before) return undefined;
  const values = weights.view(key); // read only; F16/BF16/F64 arrive converted (F64 may overflow float32: caught here)
  const bad = firstNonFinite(values);
  if (bad >= 0) problems.push(`${key}: value at index ${bad} is not finite (${values[bad]})`);
  return problems.length > before ? undefined : values;
}

registerDeltaKind(ia3);
