/**
 * Bias tuning (BitFit, Ben Zaken et al., 2022): a delta is a new bias for some linear layers.
 * PEFT has no format for it; deltaserve reads one in PEFT's style:
 *
 *   adapter_config.json
 *     peft_type                "BITFIT"
 *     target_modules           PEFT's matching (peft/targets.ts): a list of names or `.name`
 *                              suffixes, a full-match regex, or "all-linear"; null or absent
 *                              means every linear layer of the blocks (the output head is not one)
 *     exclude_modules, layers_to_transform, layers_pattern   as in PEFT's LoraConfig
 *     base_model_name_or_path, task_type, revision, inference_mode, peft_version, auto_mapping
 *                              PeftConfig's own fields, type-checked, otherwise unused
 *     modules_to_save          refused unless empty (a delta does not carry whole modules)
 *   adapter_model.safetensors
 *     base_model.model.<module>.bias   [out]   the full tuned bias of that linear layer
 *
 * Per row: y = x Wᵀ + b_row, where b_row is the delta's bias for tokens of rows with the delta
 * and the base bias (zero for layers without one, as Llama's) otherwise. For a layer the delta
 * does not set, b_row is the base bias: the layer is left as the base computes it.
 *
 * Lowering: the base keeps its fused Gemm with bias. Only the tokens whose row has a BitFit delta
 * are gathered (bitfit_tokens [U, 1], their slots bitfit_slots [U]); each gets
 *   y[t] + b_δ                for a layer without a base bias (one rounding, as x Wᵀ + b_δ has),
 *   y[t] + (b_δ − b_base)     for one with a base bias (two more roundings, each half an ulp of
 *                             |b| or |y|: within 1e-6 of x Wᵀ + b_δ while those stay below ~4),
 *   y[t]                      where the delta leaves a biased layer unset (bitfit_set.<module> = 0),
 * and is scattered back (ScatterND): every other token keeps the base Gemm's output bit for bit.
 * A per-token Where over a gathered [T, out] bias would read and write all T rows thrice; the
 * scatter touches U rows and copies y once. Subtracting b_base rather than recomputing x Wᵀ
 * without it avoids a second Gemm per layer.
 *
 * Slot layout, per projection: bitfit.<module> [out] (b_δ, neutral 0) and, where the base has a
 * bias, bitfit_set.<module> [1] (1 where the delta sets the layer, neutral 0).
 */
import type { ArchitectureSpec, ProjectionSpec } from '../../model/architecture.js';
import { allProjections } from '../../model/architecture.js';
import type { DeltaLowering, HookContext } from '../../model/delta-hooks.js';
import { DeltaValidationError } from '../errors.js';
import { registerDeltaKind, type DeltaKind, type FeedInput, type FeedTensor, type ParseInput, type ParsedDelta, type SlotTensor } from '../kind.js';
import type { ConfigFields } from '../peft/config-fields.js';
import { knownFields, moduleVectors, packVectors, PEFT_BASE_FIELDS, readBaseFields, readVector } from '../peft/module-vectors.js';
import { isTargeted, readTargetRules, type TargetRules } from '../peft/targets.js';

export const bitfitBias = (modulePath: string) => `bitfit.${modulePath}`;
export const bitfitSet = (modulePath: string) => `bitfit_set.${modulePath}`;
const TOKENS = 'bitfit_tokens';
const SLOTS = 'bitfit_slots';
const FIELDS = [...PEFT_BASE_FIELDS, 'target_modules', 'exclude_modules', 'layers_to_transform', 'layers_pattern', 'modules_to_save'];
const KEY = /^base_model\.model\.(.+)\.(bias)$/;

const projections = (arch: ArchitectureSpec): ProjectionSpec[] => allProjections(arch).flat();

export const bitfit: DeltaKind = {
  name: 'bitfit',
  family: 'specification',
  format: "PEFT-style peft_type 'BITFIT' (deltaserve's format: base_model.model.<module>.bias)",
  detect: (config) => config['peft_type'] === 'BITFIT',
  parse: parseBitfit,

  slotTensors(arch): SlotTensor[] {
    return projections(arch).flatMap((p) => [
      { name: bitfitBias(p.modulePath), length: p.outFeatures, neutral: 0, dims: [p.outFeatures] },
      ...(p.bias ? [{ name: bitfitSet(p.modulePath), length: 1, neutral: 0, dims: [1] }] : []),
    ]);
  },

  lowering: () => bitfitLowering(),

  feeds({ tokenSlots }: FeedInput): FeedTensor[] {
    const { tokens, slots } = tokensWithDelta(tokenSlots);
    return [
      { name: TOKENS, dtype: 'int64', data: tokens, dims: [tokens.length, 1] },
      { name: SLOTS, dtype: 'int64', data: slots, dims: [slots.length] },
    ];
  },
};

/**
 * The tokens whose row has a delta of the kind, in order, and each one's slot.
 *
 * @example tokensWithDelta([-1, 2, 2, -1, 0]) // { tokens: [1, 2, 4], slots: [2, 2, 0] }
 */
export function tokensWithDelta(tokenSlots: ArrayLike<number>): { tokens: number[]; slots: number[] } {
  const tokens: number[] = [];
  const slots: number[] = [];
  for (let t = 0; t < tokenSlots.length; t++) {
    if (tokenSlots[t]! < 0) continue;
    tokens.push(t);
    slots.push(tokenSlots[t]!);
  }
  return { tokens, slots };
}

function bitfitLowering(): DeltaLowering {
  return {
    kind: 'bitfit',
    /** y with the delta tokens' rows replaced: y[t] + b_δ − b_base (see the file's header). */
    projectionOutput(ctx: HookContext, p: ProjectionSpec, _x: string, y: string): string {
      const { b } = ctx;
      // Token indices come as [U, 1] for GatherND/ScatterND: an Unsqueeze of int64 in the graph
      // would run on the CPU under webgpu.
      const tokens = ctx.input(TOKENS, 'int64', ['bitfit_tokens', 1]);
      const slots = ctx.input(SLOTS, 'int64', ['bitfit_tokens']);
      const tuned = b.op1('Gather', [ctx.input(bitfitBias(p.modulePath), 'float32', ['bitfit_slots', p.outFeatures]), slots], { axis: 0 }); // [U, out]
      const rows = b.op1('GatherND', [y, tokens]); // [U, out]
      let updated: string;
      if (!p.bias) updated = b.op1('Add', [rows, tuned]); // [U, out]
      else {
        const set = b.op1('Cast', [b.op1('Gather', [ctx.input(bitfitSet(p.modulePath), 'float32', ['bitfit_slots', 1]), slots], { axis: 0 })], { to: 9 }); // [U, 1] bool
        updated = b.op1('Where', [set, b.op1('Add', [rows, b.op1('Sub', [tuned, ctx.weight(p.bias)])]), rows]); // [U, out]
      }
      return b.op1('ScatterND', [y, tokens, updated]); // [T, out]: other tokens' rows are y's own
    },
  };
}

function parseBitfit({ name, config, weights, arch }: ParseInput): ParsedDelta {
  const { fields, ignored } = knownFields(config, FIELDS, "deltaserve's BITFIT config");
  const targets = readBitfitConfig(fields, arch);
  if (fields.problems.length) throw new DeltaValidationError(name, fields.problems.map((p) => `adapter_config.json: ${p}`));
  const warnings = [...ignored];
  const problems: string[] = [];
  const present = moduleVectors(weights.header.tensors.keys(), KEY, (key) => warnings.push(`${key}: ignored (not a base_model.model.<module>.bias tensor; PEFT ignores unexpected keys)`));
  const targeted = arch.modules.filter((m) => isTargeted(targets, m.path));
  if (targeted.length === 0) throw new DeltaValidationError(name, ['adapter_config.json: target_modules selects no module of the backbone']);
  const vectors: [string, ArrayLike<number>][] = [];
  for (const module of targeted) {
    const p = projections(arch).find((q) => q.modulePath === module.path);
    if (!p) problems.push(`target_modules selects '${module.path}', ${describeModule(module.kind)}; BitFit tunes the biases of the transformer blocks' linear layers only`);
    else if (!present.has(module.path)) warnings.push(`${module.path}: targeted but has no .bias tensor; it keeps the base bias`);
    else vectors.push(...biasVectors(p, present.get(module.path)!.get('bias')!, weights, problems));
    present.delete(module.path);
  }
  for (const path of present.keys()) warnings.push(`${path}: its bias is ignored: ${arch.modules.some((m) => m.path === path) ? 'target_modules does not select it' : 'the backbone has no such module'} (PEFT ignores it too)`);
  const tuned = vectors.filter(([n]) => n.startsWith('bitfit.'));
  if (!problems.length && tuned.length === 0) problems.push('adapter_model.safetensors holds no bias for the modules adapter_config.json targets');
  if (problems.length) throw new DeltaValidationError(name, problems);
  const summary = { modules: tuned.length, params: tuned.reduce((n, [, v]) => n + v.length, 0) };
  return { kind: 'bitfit', name, tensors: packVectors(vectors), virtualTokens: 0, summary, warnings };
}

/** One targeted layer's slot vectors: its tuned bias, and the flag where the base has a bias of its own. */
function biasVectors(p: ProjectionSpec, key: string, weights: ParseInput['weights'], problems: string[]): [string, ArrayLike<number>][] {
  const bias = readVector(weights, key, p.outFeatures, problems);
  if (!bias) return [];
  return [[bitfitBias(p.modulePath), bias], ...(p.bias ? [[bitfitSet(p.modulePath), [1]] as [string, number[]]] : [])];
}

function readBitfitConfig(fields: ConfigFields, arch: ArchitectureSpec): TargetRules {
  readBaseFields(fields, 'BITFIT');
  const linear = arch.modules.filter((m) => m.kind === 'linear').map((m) => m.path);
  fields.unsupported('modules_to_save', (v) => Array.isArray(v) && v.length === 0, 'a BitFit delta carries biases only, not whole modules');
  // null / absent target_modules: every linear layer, as "all-linear" would select.
  return readTargetRules(fields, linear, linear);
}

function describeModule(kind: string): string {
  if (kind === 'head') return 'the output head';
  return `a${/^[aeiou]/.test(kind) ? 'n' : ''} ${kind} module`;
}

registerDeltaKind(bitfit);
