/**
 * Training LoRA and rsLoRA (`method: { type: 'lora', lora: { r, alpha, target_modules, use_rslora } }`),
 * as PEFT's tuners/lora defines them: per targeted linear layer `y += scale · (x Aᵀ) Bᵀ` with
 * A `lora_A.weight` [r, in] and B `lora_B.weight` [out, r] (GPT-2's Conv1D layers too), scale
 * `alpha / r`, or `alpha / sqrt(r)` with use_rslora. PEFT's default initialisation
 * (`init_lora_weights=True`): A ~ kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0,
 * so training starts from the base model's outputs. The trained adapter is written as
 * save_pretrained writes it (deltas/peft-lora-write.ts) and served by the `lora` kind.
 *
 * Options keep the names this API has always taken (`alpha` for PEFT's lora_alpha, default 16);
 * `target_modules` is a list of projection names (q_proj, c_attn, ...) or 'all-linear'.
 */
import { z } from 'zod';
import { allProjections, type ArchitectureSpec, type ProjectionSpec } from '../../model/architecture.js';
import type { TrainingHooks } from '../../model/delta-hooks.js';
import type { TrainableParam } from '../../model/lower-training.js';
import { mulberry32 } from '../../model/random.js';
import { encodePeftLora, loraWeightsFromPeft, type LoraWeights } from '../peft-lora-write.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind } from '../training.js';

const positiveInt = z.number().int().positive();

/**
 * `method.lora`. alpha is bounded so that scale · lora_B stays far inside float32 for any weights
 * training can produce (a job accepted with alpha 1e308 trained to the end and then failed to publish).
 */
export const LoraTrainingOptions = z
  .object({
    r: positiveInt.max(65536).default(8),
    alpha: z.number().positive().max(65536).default(16),
    target_modules: z.union([z.array(z.string().min(1).max(64)).min(1).max(64), z.literal('all-linear')]).default('all-linear'),
    use_rslora: z.boolean().default(false),
  })
  .strict();

export type LoraTrainingOptions = z.infer<typeof LoraTrainingOptions>;

/** LoRA options resolved against a backbone: the module paths that carry A and B. */
export interface LoraLayout {
  r: number;
  alpha: number;
  useRslora: boolean;
  /** Module paths, e.g. model.layers.0.self_attn.q_proj, in the backbone's order. */
  modules: string[];
  /** PEFT's target_modules as written to adapter_config.json. */
  targetModules: string[];
}

/** The trainable tensors' names: PEFT's keys without `base_model.model.`. */
export const loraParamA = (module: string) => `${module}.lora_A.weight`;
export const loraParamB = (module: string) => `${module}.lora_B.weight`;

/**
 * PEFT's scaling of B·A: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
 *
 * @example loraScale({ r: 16, alpha: 32, useRslora: true }) // 8
 */
export function loraScale(l: Pick<LoraLayout, 'r' | 'alpha' | 'useRslora'>): number {
  return l.useRslora ? l.alpha / Math.sqrt(l.r) : l.alpha / l.r;
}

export const loraTraining: TrainableKind<LoraTrainingOptions, LoraLayout> = {
  name: 'lora',
  deltaKind: 'lora',
  graphVersion: 1,
  options: LoraTrainingOptions,

  resolve(arch, o, limits): LoraLayout {
    if (o.r > limits.maxRank) throw new TrainingOptionsError('r', `${o.r} exceeds the server's max rank ${limits.maxRank}`);
    const projections = allProjections(arch).flat();
    const known = new Set(projections.map((p) => p.name));
    if (o.target_modules !== 'all-linear') {
      const unknown = o.target_modules.filter((m) => !known.has(m));
      if (unknown.length) throw new TrainingOptionsError('target_modules', `${unknown.join(', ')} not in the backbone (it has ${[...known].join(', ')})`);
    }
    const wanted = o.target_modules === 'all-linear' ? known : new Set(o.target_modules);
    const modules = projections.filter((p) => wanted.has(p.name)).map((p) => p.modulePath);
    return { r: o.r, alpha: o.alpha, useRslora: o.use_rslora, modules, targetModules: [...wanted].sort() };
  },

  params(arch, l): TrainableParam[] {
    const projections = byPath(arch);
    return l.modules.flatMap((module) => {
      const p = projections.get(module);
      if (!p) throw new Error(`no projection ${module} in the backbone`);
      return [
        { name: loraParamA(module), shape: [l.r, p.inFeatures] },
        { name: loraParamB(module), shape: [p.outFeatures, l.r] },
      ];
    });
  },

  init(arch, l, seed) {
    const random = mulberry32(seed);
    const params = new Map<string, Float32Array>();
    for (const { name, shape } of loraTraining.params(arch, l)) {
      const values = new Float32Array(shape[0]! * shape[1]!);
      if (name.endsWith('.lora_A.weight')) {
        const bound = 1 / Math.sqrt(shape[1]!);
        for (let i = 0; i < values.length; i++) values[i] = (2 * random() - 1) * bound;
      }
      params.set(name, values);
    }
    return params;
  },

  fromDelta(files, arch) {
    const weights = loraWeightsFromPeft(files.config, files.weights, arch);
    const params = new Map<string, Float32Array>();
    for (const [module, { a, b }] of weights.modules) params.set(loraParamA(module), a).set(loraParamB(module), b);
    const options = { r: weights.r, alpha: weights.alpha, useRslora: weights.useRslora, modules: [...weights.modules.keys()], targetModules: weights.targetModules };
    return { options, params };
  },

  hooks: (arch, l) => loraTrainingHooks(l),

  write(arch, l, params, meta) {
    const projections = byPath(arch);
    const modules: LoraWeights['modules'] = new Map();
    for (const module of l.modules) {
      const { inFeatures, outFeatures } = projections.get(module)!;
      modules.set(module, { a: params.get(loraParamA(module))!, b: params.get(loraParamB(module))!, inFeatures, outFeatures });
    }
    const conv1d = l.modules.some((m) => projections.get(m)!.layout === 'in_out');
    const files = encodePeftLora({ r: l.r, alpha: l.alpha, useRslora: l.useRslora, targetModules: l.targetModules, modules, baseModel: meta.baseModel, ...(conv1d ? { fanInFanOut: true } : {}) });
    return { config: files.config, weights: files.weights };
  },
};

/** y + scale · (x Aᵀ) Bᵀ on the targeted projections: the same Gemms PEFT's Linear.forward runs. */
function loraTrainingHooks(l: LoraLayout): TrainingHooks {
  const targeted = new Set(l.modules);
  const scale = loraScale(l);
  return {
    kind: 'lora',
    projectionOutput(ctx, p, x, y) {
      if (!targeted.has(p.modulePath)) return y;
      const { g } = ctx;
      const update = g.apply('Gemm', [g.apply('Gemm', [x, ctx.param(loraParamA(p.modulePath))], { transB: 1 }), ctx.param(loraParamB(p.modulePath))], { transB: 1 }); // [N, out]
      return g.apply('Add', [y, g.apply('Mul', [update, g.scalar(scale, update)])]);
    },
  };
}

function byPath(arch: ArchitectureSpec): Map<string, ProjectionSpec> {
  return new Map(allProjections(arch).flat().map((p) => [p.modulePath, p]));
}

registerTrainableKind(loraTraining);
