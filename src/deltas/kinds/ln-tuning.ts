/**
 * LayerNorm / RMSNorm tuning (PEFT `LN_TUNING`, Zhao et al., 2023, https://huggingface.co/papers/2312.11420).
 *
 * PEFT (peft/tuners/ln_tuning/) wraps each targeted module in an LNTuningLayer holding a trainable
 * deepcopy of it (layer.py `update_layer`) and runs that copy instead of the base module
 * (`forward`). The tuner layer's state lives under `ln_tuning_layers.<adapter>`; saving drops
 * the adapter name (tuners_utils.py `_remove_adapter_name_from_state_dict_key`), so the file holds
 *   base_model.model.<module>.ln_tuning_layers.weight   [H]
 *   base_model.model.<module>.ln_tuning_layers.bias     [H]   (LayerNorm only; RMSNorm has none)
 * target_modules defaults per model type (utils/constants.py
 * TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING); LNTuningConfig has no
 * layers_to_transform / layers_pattern, so those fields are ignored as PEFT ignores them.
 *
 * Per row: norm(x) = normalized(x) · w_row (+ b_row), with the delta's weight (and bias) for the
 * tokens of rows with the delta, the base norm's otherwise. A targeted norm the file has no
 * tensors for keeps the base's (the deepcopy PEFT starts from).
 *
 * Lowering, per norm: the delta's vectors are gathered once per token that has the delta
 * (ln_tuning_slots [U]), a neutral row is appended, and each of the norm's rows picks its own
 * (ln_tuning_cells [T]: the token's position among the U, or U); a Where on the per-token
 * "this delta sets this norm" flag then chooses between normalized · w (+ b) and the base output,
 * so rows without the delta keep the base norm bit for bit. The final norm runs on the logits
 * tokens only: its rows pick their tokens' values through NormParts.tokens (logits_index).
 *
 * Slot layout, per norm: ln_tuning.<module>.weight [H], .bias [H] for LayerNorms, and
 * ln_tuning_set.<module> [1] (1 where the delta sets the norm); all neutral 0.
 */
import type { ArchitectureSpec, NormSpec } from '../../model/architecture.js';
import type { DeltaLowering, HookContext, NormParts } from '../../model/delta-hooks.js';
import { inlineTensor } from '../../graph/ir.js';
import { DeltaValidationError } from '../errors.js';
import { registerDeltaKind, type DeltaKind, type FeedInput, type FeedTensor, type ParseInput, type ParsedDelta, type SlotTensor } from '../kind.js';
import type { ConfigFields } from '../peft/config-fields.js';
import { knownFields, moduleVectors, packVectors, PEFT_BASE_FIELDS, readBaseFields, readVector } from '../peft/module-vectors.js';
import { isTargeted, readTargetRules, type TargetRules } from '../peft/targets.js';

export const lnWeight = (modulePath: string) => `ln_tuning.${modulePath}.weight`;
export const lnBias = (modulePath: string) => `ln_tuning.${modulePath}.bias`;
export const lnSet = (modulePath: string) => `ln_tuning_set.${modulePath}`;
const SLOTS = 'ln_tuning_slots';
const CELLS = 'ln_tuning_cells';
const FIELDS = [...PEFT_BASE_FIELDS, 'target_modules', 'exclude_modules', 'modules_to_save'];
const KEY = /^base_model\.model\.(.+)\.ln_tuning_layers\.(weight|bias)$/;

/** PEFT's default targets (TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING) for the families deltaserve runs. */
export const LN_TUNING_DEFAULT_TARGETS: Record<string, string[]> = {
  llama: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  mistral: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  qwen2: ['post_attention_layernorm'],
  gpt2: ['ln_1', 'ln_2', 'ln_f'],
};

/** A norm of the backbone: its module path (as PEFT names it) and how the lowering sees it. */
interface NormModule {
  path: string;
  spec: NormSpec;
}

/**
 * Every norm the inference graph runs, keyed by its weight's checkpoint name (what NormParts carries).
 *
 * @example normModules(gpt2Arch).get('h.0.ln_1.weight')?.path // 'transformer.h.0.ln_1'
 */
export function normModules(arch: ArchitectureSpec): Map<string, NormModule> {
  const specs = [...arch.blocks.flatMap((block) => [block.inputNorm, block.postAttentionNorm]), arch.finalNorm];
  const paths = arch.modules.filter((m) => m.kind === 'norm').map((m) => m.path);
  return new Map(specs.map((spec) => {
    // Checkpoint names may lack the model object's prefix (GPT-2's bare `h.0.ln_1.weight`).
    const stem = spec.weight.replace(/\.weight$/, '');
    const path = paths.find((p) => p === stem || p.endsWith(`.${stem}`));
    if (!path) throw new Error(`${arch.family}: no norm module for ${spec.weight}`);
    return [spec.weight, { path, spec }];
  }));
}

export const lnTuning: DeltaKind = {
  name: 'ln_tuning',
  family: 'specification',
  format: "PEFT peft_type 'LN_TUNING'",
  detect: (config) => config['peft_type'] === 'LN_TUNING',
  parse: parseLnTuning,

  slotTensors(arch): SlotTensor[] {
    const H = arch.hiddenSize;
    return [...normModules(arch).values()].flatMap(({ path, spec }) => [
      { name: lnWeight(path), length: H, neutral: 0, dims: [H] },
      ...(spec.bias ? [{ name: lnBias(path), length: H, neutral: 0, dims: [H] }] : []),
      { name: lnSet(path), length: 1, neutral: 0, dims: [1] },
    ]);
  },

  lowering: (arch) => lnTuningLowering(normModules(arch)),

  feeds({ tokenSlots }: FeedInput): FeedTensor[] {
    const { slots, cells } = deltaCells(tokenSlots);
    return [
      { name: SLOTS, dtype: 'int64', data: slots, dims: [slots.length] },
      { name: CELLS, dtype: 'int64', data: cells, dims: [cells.length] },
    ];
  },
};

/**
 * The slot of each token whose row has a delta of the kind (in token order), and per token its
 * position in that list, or the list's length (a neutral row) when its row has none.
 *
 * @example deltaCells([-1, 2, 2, -1, 0]) // { slots: [2, 2, 0], cells: [3, 0, 1, 3, 2] }
 */
export function deltaCells(tokenSlots: ArrayLike<number>): { slots: number[]; cells: number[] } {
  const slots: number[] = [];
  const cells: number[] = [];
  for (let t = 0; t < tokenSlots.length; t++) {
    cells.push(tokenSlots[t]! < 0 ? -1 : slots.length);
    if (tokenSlots[t]! >= 0) slots.push(tokenSlots[t]!);
  }
  return { slots, cells: cells.map((c) => (c < 0 ? slots.length : c)) };
}

function lnTuningLowering(norms: ReadonlyMap<string, NormModule>): DeltaLowering {
  return {
    kind: 'ln_tuning',
    /** Where(the row's delta sets this norm, normalized · w_row (+ b_row), base). */
    norm(ctx: HookContext, parts: NormParts, baseOutput: string): string {
      const { b } = ctx;
      const { path, spec } = norms.get(parts.spec.weight)!;
      const H = ctx.arch.hiddenSize;
      const rowsOf = (name: string, width: number) => perRow(ctx, ctx.input(name, 'float32', ['ln_tuning_slots', width]), width, parts.tokens);
      let tuned = b.op1('Mul', [parts.normalized(), rowsOf(lnWeight(path), H)]); // [n, H]
      if (spec.bias) tuned = b.op1('Add', [tuned, rowsOf(lnBias(path), H)]); // [n, H]
      const set = b.op1('Cast', [rowsOf(lnSet(path), 1)], { to: 9 }); // [n, 1] bool
      return b.op1('Where', [set, tuned, baseOutput]); // [n, H]: selected, never blended
    },
  };
}

/**
 * Each of a norm's rows' value of one slot tensor ([n, width]): the U delta tokens' slots are
 * read once, a zero row is appended for tokens without the delta, and every token takes its cell;
 * the final norm's rows then take their tokens' (logits_index). Gathering the int64 cells through
 * logits_index instead would save that [T, width] step but run on the CPU under webgpu.
 */
function perRow(ctx: HookContext, stack: string, width: number, tokens: string | undefined): string {
  const { b } = ctx;
  const slots = ctx.input(SLOTS, 'int64', ['ln_tuning_tokens']);
  const cells = ctx.input(CELLS, 'int64', ['tokens']);
  const zero = ctx.shared(`ln_tuning.zero.${width}`, () => b.initializer('ln_tuning_zero_row', inlineTensor('float32', [1, width], new Float32Array(width))));
  const perDeltaToken = b.op1('Gather', [stack, slots], { axis: 0 }); // [U, width]
  const perToken = b.op1('Gather', [b.op1('Concat', [perDeltaToken, zero], { axis: 0 }), cells], { axis: 0 }); // [T, width]
  return tokens === undefined ? perToken : b.op1('Gather', [perToken, tokens], { axis: 0 }); // [n, width]
}

function parseLnTuning({ name, config, weights, arch }: ParseInput): ParsedDelta {
  const { fields, ignored } = knownFields(config, FIELDS, 'LNTuningConfig');
  const targets = readLnConfig(fields, arch);
  if (fields.problems.length) throw new DeltaValidationError(name, fields.problems.map((p) => `adapter_config.json: ${p}`));
  const warnings = [...ignored];
  const problems: string[] = [];
  const present = moduleVectors(weights.header.tensors.keys(), KEY, (key) => warnings.push(`${key}: ignored (not a base_model.model.<module>.ln_tuning_layers.weight/bias tensor; PEFT ignores unexpected keys)`));
  const targeted = arch.modules.filter((m) => isTargeted(targets, m.path));
  if (targeted.length === 0) throw new DeltaValidationError(name, ['adapter_config.json: target_modules selects no module of the backbone (PEFT refuses such an adapter too)']);
  const norms = [...normModules(arch).values()];
  const vectors: [string, ArrayLike<number>][] = [];
  for (const module of targeted) {
    const norm = norms.find((n) => n.path === module.path);
    if (!norm) problems.push(`target_modules selects '${module.path}', ${module.kind === 'head' ? 'the output head' : `a ${module.kind} module`}; LN tuning serves norm layers only (PEFT would train a full copy of it)`);
    else if (!present.has(module.path)) warnings.push(`${module.path}: targeted but has no ln_tuning_layers tensors; it keeps the base norm's weight${norm.spec.bias ? ' and bias' : ''}`);
    else vectors.push(...normVectors(norm, present.get(module.path)!, weights, arch.hiddenSize, problems, warnings));
    present.delete(module.path);
  }
  for (const path of present.keys()) warnings.push(`${path}: its ln_tuning_layers tensors are ignored: ${arch.modules.some((m) => m.path === path) ? 'target_modules does not select it' : 'the backbone has no such module'} (PEFT ignores them too)`);
  const modules = vectors.filter(([n]) => n.startsWith('ln_tuning_set.')).length;
  if (!problems.length && modules === 0) problems.push('adapter_model.safetensors holds no ln_tuning_layers tensors for the norms adapter_config.json targets');
  if (problems.length) throw new DeltaValidationError(name, problems);
  const params = vectors.reduce((n, [key, v]) => n + (key.startsWith('ln_tuning_set.') ? 0 : v.length), 0);
  return { kind: 'ln_tuning', name, tensors: packVectors(vectors), virtualTokens: 0, summary: { modules, params }, warnings };
}

/** One targeted norm's slot vectors: weight (and bias for a LayerNorm), both required, and its flag. */
function normVectors({ path, spec }: NormModule, keys: ReadonlyMap<string, string>, weights: ParseInput['weights'], H: number, problems: string[], warnings: string[]): [string, ArrayLike<number>][] {
  const weightKey = keys.get('weight');
  const biasKey = keys.get('bias');
  if (!spec.bias && biasKey) warnings.push(`${biasKey}: ignored (${path} is an RMSNorm, which has no bias; PEFT ignores unexpected keys)`);
  if (!weightKey || (spec.bias && !biasKey)) {
    const missing = `base_model.model.${path}.ln_tuning_layers.${weightKey ? 'bias' : 'weight'}`;
    problems.push(`${path}: ${missing} is missing (PEFT saves the copied norm's weight${spec.bias ? ' and bias' : ''} together)`);
    return [];
  }
  const weight = readVector(weights, weightKey, H, problems);
  const bias = spec.bias ? readVector(weights, biasKey!, H, problems) : undefined;
  if (!weight || (spec.bias && !bias)) return [];
  return [[lnWeight(path), weight], ...(bias ? [[lnBias(path), bias] as [string, Float32Array]] : []), [lnSet(path), [1]]];
}

function readLnConfig(fields: ConfigFields, arch: ArchitectureSpec): TargetRules {
  readBaseFields(fields, 'LN_TUNING');
  fields.unsupported('modules_to_save', (v) => Array.isArray(v) && v.length === 0, 'a delta carries norm weights only, not whole modules');
  const linear = arch.modules.filter((m) => m.kind === 'linear').map((m) => m.path);
  return readTargetRules(fields, LN_TUNING_DEFAULT_TARGETS[arch.family], linear);
}

registerDeltaKind(lnTuning);
