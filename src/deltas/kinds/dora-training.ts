/**
 * Training DoRA (`method: { type: 'dora', dora: { r, alpha, target_modules, use_rslora } }`), PEFT's
 * LoRA with `use_dora=True`: the options, targets, scaling and A/B initialisation of method.lora
 * (lora-training.ts), plus a trainable magnitude m [out] per targeted layer. The forward is PEFT's
 * (tuners/lora/dora.py DoraLinearLayer.forward, from variants.py DoraLinearVariant.forward with
 * base_result = the base layer's output, lora_dropout 0):
 *
 *   weight_norm    = ‖transpose(W, fan_in_fan_out) + scaling · B·A‖ per output row, DETACHED
 *   mag_norm_scale = m / weight_norm
 *   result         = y + (mag_norm_scale − 1) ⊙ (y − bias) + mag_norm_scale ⊙ (x Aᵀ Bᵀ) · scaling
 *
 * The norm is recomputed from the current A and B every step but receives no gradient (the DoRA
 * paper's section 4.3, quoted at `weight_norm.detach()` in dora.py): m, and A and B through the
 * LoRA product and the rescaling, are what the gradient sees.
 *
 * Initialisation: A and B as LoRA's (kaiming-uniform A, B = 0), and m = ‖W + scaling·B·A‖ =
 * ‖W‖ per row (DoraLinearLayer.update_layer), read from the backbone, so training starts from the
 * base model's outputs exactly. The adapter is written as save_pretrained writes a DoRA: the
 * LoRA's files with `use_dora: true` and `<module>.lora_magnitude_vector` [out]
 * (LoraModel._get_adapter_state_dict drops PEFT's `.default.weight` suffix), served by the lora kind.
 */
import type { ArchitectureSpec, ProjectionSpec } from '../../model/architecture.js';
import { allProjections } from '../../model/architecture.js';
import type { TrainingHookContext, TrainingHooks } from '../../model/delta-hooks.js';
import type { TrainableParam } from '../../model/lower-training.js';
import { encodeSafetensors, parseSafetensors } from '../../model/safetensors.js';
import { parseConfigObject } from '../peft/config-fields.js';
import { combinedRowNorms } from '../peft-dora.js';
import { encodePeftLora } from '../peft-lora-write.js';
import { parsePeftLoraModules, type LoraModule } from '../peft-lora.js';
import { registerTrainableKind, type TrainableKind, type TrainingBackbone } from '../training.js';
import { loraParamA, loraParamB, loraScale, loraTraining, LoraTrainingOptions, type LoraLayout } from './lora-training.js';

/** The magnitude's name: PEFT's saved key without `base_model.model.`. */
export const doraParamMagnitude = (module: string) => `${module}.lora_magnitude_vector`;

const PREFIX = 'base_model.model.';

export const doraTraining: TrainableKind<LoraTrainingOptions, LoraLayout> = {
  name: 'dora',
  deltaKind: 'lora',
  graphVersion: 1,
  options: LoraTrainingOptions,

  resolve: (arch, options, limits) => loraTraining.resolve(arch, options, limits),

  params(arch, l): TrainableParam[] {
    const projections = byPath(arch);
    return loraTraining.params(arch, l).flatMap((p, i) => {
      if (i % 2 === 0) return [p];
      const module = l.modules[(i - 1) / 2]!;
      return [p, { name: doraParamMagnitude(module), shape: [projections.get(module)!.outFeatures] }];
    });
  },

  init(arch, l, seed, backbone) {
    const params = loraTraining.init(arch, l, seed);
    const projections = byPath(arch);
    for (const module of l.modules) {
      const p = projections.get(module)!;
      const lora = { a: params.get(loraParamA(module))!, b: params.get(loraParamB(module))!, rank: l.r, scale: loraScale(l) };
      params.set(doraParamMagnitude(module), magnitudeOf(p, lora, needBackbone(backbone)));
    }
    return ordered(arch, l, params);
  },

  fromDelta(files, arch, backbone) {
    const { layout, modules } = readAdapter(files.config, files.weights, arch);
    const projections = byPath(arch);
    const params = new Map<string, Float32Array>();
    for (const [module, m] of modules) {
      params.set(loraParamA(module), Float32Array.from(m.a)).set(loraParamB(module), Float32Array.from(m.b));
      // A plain LoRA becomes a DoRA as PEFT's update_layer makes one on existing factors: m = ‖W + s·B·A‖, the same outputs.
      params.set(doraParamMagnitude(module), m.magnitude ? Float32Array.from(m.magnitude) : magnitudeOf(projections.get(module)!, m, needBackbone(backbone)));
    }
    return { options: layout, params: ordered(arch, layout, params) };
  },

  hooks: (arch, l) => doraTrainingHooks(l),

  write(arch, l, params, meta) {
    const lora = loraTraining.write(arch, l, params, meta);
    const config = { ...JSON.parse(lora.config), use_dora: true };
    const projections = byPath(arch);
    const tensors: Parameters<typeof encodeSafetensors>[0] = {};
    for (const module of l.modules) {
      const { inFeatures, outFeatures } = projections.get(module)!;
      tensors[`${PREFIX}${loraParamA(module)}`] = { dtype: 'F32', shape: [l.r, inFeatures], data: params.get(loraParamA(module))! };
      tensors[`${PREFIX}${loraParamB(module)}`] = { dtype: 'F32', shape: [outFeatures, l.r], data: params.get(loraParamB(module))! };
      tensors[`${PREFIX}${doraParamMagnitude(module)}`] = { dtype: 'F32', shape: [outFeatures], data: params.get(doraParamMagnitude(module))! };
    }
    // PEFT's json.dump(sort_keys=True): use_dora was already in its sorted place.
    return { config: JSON.stringify(config, null, 2), weights: encodeSafetensors(tensors, { format: 'pt' }) };
  },
};

/**
 * PEFT's DoRA on the targeted projections, with the weight norm detached (no gradient through it).
 * Shapes for N tokens: x [N, in], y [N, out].
 */
function doraTrainingHooks(l: LoraLayout): TrainingHooks {
  const targeted = new Set(l.modules);
  const scale = loraScale(l);
  return {
    kind: 'dora',
    projectionOutput(ctx, p, x, y) {
      if (!targeted.has(p.modulePath)) return y;
      const { g } = ctx;
      const a = ctx.param(loraParamA(p.modulePath)); // [r, in]
      const b = ctx.param(loraParamB(p.modulePath)); // [out, r]
      const gain = g.apply('Div', [ctx.param(doraParamMagnitude(p.modulePath)), weightNorm(ctx, p, a, b, scale)]); // [out]: mag_norm_scale
      const loraResult = g.apply('Gemm', [g.apply('Gemm', [x, a], { transB: 1 }), b], { transB: 1 }); // [N, out]
      const baseResult = p.bias ? g.apply('Sub', [y, ctx.weight(p.bias)]) : y; // [N, out]: the weight's part of y
      const rescaled = g.apply('Mul', [g.apply('Sub', [gain, g.scalar(1, gain)]), baseResult]); // [N, out]
      const update = g.apply('Mul', [g.apply('Mul', [gain, loraResult]), g.scalar(scale, loraResult)]); // [N, out]
      return g.apply('Add', [y, g.apply('Add', [rescaled, update])]);
    },
  };
}

/** ‖transpose(W, fan_in_fan_out) + scale · B·A‖ over the input dimension, [out], detached as PEFT detaches it. */
function weightNorm(ctx: TrainingHookContext, p: ProjectionSpec, a: string, b: string, scale: number): string {
  const { g } = ctx;
  const loraWeight = g.apply('MatMul', [b, a]); // [out, in]
  const w = p.layout === 'out_in' ? ctx.weight(p.weight) : g.apply('Transpose', [ctx.weight(p.weight)], { perm: [1, 0] }); // [out, in]
  const combined = g.apply('Add', [w, g.apply('Mul', [loraWeight, g.scalar(scale, loraWeight)])]); // [out, in]
  const norm = g.apply('Sqrt', [g.apply('ReduceSum', [g.apply('Mul', [combined, combined]), g.ints([1])], { keepdims: 0 })]); // [out]
  return g.detach(norm);
}

/** PEFT's DoRA magnitude for factors A, B: ‖W + s·B·A‖ per output row (‖W‖ while B = 0), as float32. */
function magnitudeOf(p: ProjectionSpec, lora: Pick<LoraModule, 'a' | 'b' | 'rank' | 'scale'>, backbone: TrainingBackbone): Float32Array {
  return Float32Array.from(combinedRowNorms(p, backbone.weight(p.weight), lora));
}

function needBackbone(backbone: TrainingBackbone | undefined): TrainingBackbone {
  if (!backbone) throw new Error("DoRA's magnitude starts from the backbone's weight norms, and no backbone was given");
  return backbone;
}

/**
 * A stored LoRA/DoRA adapter as the training layout and its modules, read by the serving parser
 * (so it accepts what the lora kind serves). Per-module ranks or alphas cannot continue as one layout.
 */
function readAdapter(configText: string, weights: Uint8Array, arch: ArchitectureSpec): { layout: LoraLayout; modules: Map<string, LoraModule> } {
  const raw = parseConfigObject(configText);
  if (typeof raw === 'string') throw new Error(`adapter_config.json: ${raw}`);
  for (const field of ['rank_pattern', 'alpha_pattern'] as const) {
    const value = raw[field];
    if (value && typeof value === 'object' && Object.keys(value).length) throw new Error(`adapter cannot be continued as DoRA: ${field} (per-module ${field === 'rank_pattern' ? 'ranks' : 'alphas'}) is not one layout`);
  }
  const r = Number(raw['r'] ?? 8);
  const { modules } = parsePeftLoraModules('adapter', raw, parseSafetensors(weights, 'adapter_model.safetensors'), arch, r, { dora: true });
  const projections = byPath(arch);
  const names = Array.isArray(raw['target_modules']) ? (raw['target_modules'] as string[]) : [...modules.keys()].map((m) => projections.get(m)!.name);
  const layout: LoraLayout = {
    r,
    alpha: Number(raw['lora_alpha'] ?? 8), // LoraConfig's default
    useRslora: raw['use_rslora'] === true,
    modules: allProjections(arch).flat().map((p) => p.modulePath).filter((m) => modules.has(m)),
    targetModules: [...new Set(names)].sort(),
  };
  return { layout, modules };
}

/** The parameters in params()' order (the trainer feeds them in that order). */
function ordered(arch: ArchitectureSpec, l: LoraLayout, params: Map<string, Float32Array>): Map<string, Float32Array> {
  return new Map(doraTraining.params(arch, l).map((p) => [p.name, params.get(p.name)!]));
}

function byPath(arch: ArchitectureSpec): Map<string, ProjectionSpec> {
  return new Map(allProjections(arch).flat().map((p) => [p.modulePath, p]));
}

registerTrainableKind(doraTraining);
