/**
 * Training LN tuning (`method: { type: 'ln_tuning', ln_tuning: { target_modules } }`), as PEFT's
 * tuners/ln_tuning defines it:
 * - which modules: LNTuningConfig's target_modules (null: the model type's default,
 *   utils/constants.py TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING, applied by
 *   LNTuningModel._prepare_adapter_config), matched by the rules the served `ln_tuning` kind reads
 *   the result with (ln-tuning.ts). PEFT would wrap any module it is pointed at; deltaserve tunes
 *   norms only, so naming another module is a 400 naming target_modules at job creation;
 * - the parameters: LNTuningLayer.update_layer deep-copies the base norm, so each targeted norm's
 *   copy starts as the base's weight (and bias, for GPT-2's LayerNorm): a fresh delta computes
 *   exactly what the base does;
 * - the forward: `LNTuningLayer.forward` runs the copy instead of the base norm — the same
 *   normalisation (eps included) with the copy's weight (and bias);
 * - the files: LNTuningConfig as save_pretrained writes it (target_modules resolved to the
 *   defaults, a list written sorted) and, per norm, `base_model.model.<module>.ln_tuning_layers.weight`
 *   (and `.bias`) [H]: get_peft_model_state_dict keeps the keys holding the tuner's prefix
 *   `ln_tuning_` and drops the adapter name (`_remove_adapter_name_from_state_dict_key`).
 * modules_to_save (whole modules) is refused, as the served kind refuses it.
 */
import { z } from 'zod';
import type { ArchitectureSpec } from '../../model/architecture.js';
import type { TrainingHooks } from '../../model/delta-hooks.js';
import type { TrainableParam } from '../../model/lower-training.js';
import type { JsonObject } from '../peft/config-fields.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind, type TrainingBackbone } from '../training.js';
import { LN_TUNING_DEFAULT_TARGETS, normModules } from './ln-tuning.js';
import { adapterConfig, encodeAdapter, loadStoredValues, ModuleField, readAdapter, targetedModules, writtenModules } from './peft-vector-training.js';

/** `method.ln_tuning`: LNTuningConfig's target_modules, PEFT's name and default. */
export const LnTuningTrainingOptions = z.object({ target_modules: ModuleField }).strict();

export type LnTuningTrainingOptions = z.infer<typeof LnTuningTrainingOptions>;

/** LN tuning options resolved against a backbone: the tuned norms, and the config fields as written. */
export interface LnTuningLayout {
  /** Norm module paths in the backbone's order, each with whether it has a bias (LayerNorm). */
  norms: { path: string; bias: boolean }[];
  targetModules: string | string[];
  excludeModules: string | string[] | null;
}

/** The trainable tensors' names: PEFT's keys without `base_model.model.`. */
export const lnTuningParam = (module: string, param: 'weight' | 'bias') => `${module}.ln_tuning_layers.${param}`;

export const lnTuningTraining: TrainableKind<LnTuningTrainingOptions, LnTuningLayout> = {
  name: 'ln_tuning',
  deltaKind: 'ln_tuning',
  graphVersion: 1,
  options: LnTuningTrainingOptions,

  resolve(arch, o): LnTuningLayout {
    const targetModules = writtenModules(o.target_modules, LN_TUNING_DEFAULT_TARGETS[arch.family]);
    if (targetModules === null) throw new TrainingOptionsError('target_modules', `PEFT has no default LN tuning target_modules for model type '${arch.family}'; list them`);
    return layoutFrom({ target_modules: targetModules, exclude_modules: null }, arch);
  },

  params(arch, l): TrainableParam[] {
    const H = arch.hiddenSize;
    return l.norms.flatMap(({ path, bias }) => [{ name: lnTuningParam(path, 'weight'), shape: [H] }, ...(bias ? [{ name: lnTuningParam(path, 'bias'), shape: [H] }] : [])]);
  },

  init(arch, l, _seed, backbone) {
    const specs = new Map([...normModules(arch).values()].map((n) => [n.path, n.spec]));
    const params = new Map<string, Float32Array>();
    for (const { path, bias } of l.norms) {
      const spec = specs.get(path)!;
      params.set(lnTuningParam(path, 'weight'), baseWeight(backbone, spec.weight, path));
      if (bias) params.set(lnTuningParam(path, 'bias'), baseWeight(backbone, spec.bias!, path));
    }
    return params;
  },

  fromDelta(files, arch, backbone) {
    const { config, tensor } = readAdapter(files);
    const options = layoutFrom({ target_modules: config['target_modules'] ?? LN_TUNING_DEFAULT_TARGETS[arch.family] ?? null, exclude_modules: config['exclude_modules'] ?? null }, arch);
    const params = loadStoredValues(lnTuningTraining.init(arch, options, 0, backbone), tensor); // a norm the file lacks keeps the base's, as PEFT loads it
    return { options, params };
  },

  hooks: (arch, l) => lnTuningTrainingHooks(arch, l),

  write(arch, l, params, meta) {
    const config = adapterConfig(meta.baseModel, { peft_type: 'LN_TUNING', target_modules: l.targetModules, exclude_modules: l.excludeModules });
    return encodeAdapter(config, lnTuningTraining.params(arch, l), params);
  },
};

/** The tuned norms for config fields without nulls; a targeted module that is not a norm is refused. */
function layoutFrom(config: JsonObject, arch: ArchitectureSpec): LnTuningLayout {
  const norms = new Map([...normModules(arch).values()].map((n) => [n.path, n.spec]));
  const tuned = targetedModules(config, undefined, arch).map((m) => {
    const spec = norms.get(m.path);
    if (!spec) throw new TrainingOptionsError('target_modules', `selects '${m.path}', a${m.kind === 'head' || m.kind === 'embedding' ? 'n' : ''} ${m.kind} module, not a norm; deltaserve's LN tuning tunes norm layers only`);
    return { path: m.path, bias: spec.bias !== undefined };
  });
  return { norms: tuned, targetModules: config['target_modules'] as string | string[], excludeModules: (config['exclude_modules'] ?? null) as string | string[] | null };
}

/** A copy of a frozen norm parameter (LNTuningLayer's deepcopy). */
function baseWeight(backbone: TrainingBackbone | undefined, name: string, module: string): Float32Array {
  if (!backbone) throw new Error(`ln_tuning: initialising ${module} needs the backbone's ${name}`);
  return Float32Array.from(backbone.weight(name));
}

/** The tuned norms run as copies: normalized(x) · w (+ b) from the parameters instead of the base's. */
function lnTuningTrainingHooks(arch: ArchitectureSpec, l: LnTuningLayout): TrainingHooks {
  const tuned = new Set(l.norms.map((n) => n.path));
  const pathOf = new Map([...normModules(arch)].map(([weight, n]) => [weight, n.path]));
  return {
    kind: 'ln_tuning',
    norm(ctx, parts, baseOutput) {
      const path = pathOf.get(parts.spec.weight)!;
      if (!tuned.has(path)) return baseOutput;
      const { g } = ctx;
      const scaled = g.apply('Mul', [parts.normalized(), ctx.param(lnTuningParam(path, 'weight'))]); // [N, H]
      return parts.spec.bias ? g.apply('Add', [scaled, ctx.param(lnTuningParam(path, 'bias'))]) : scaled; // [N, H]
    },
  };
}

registerTrainableKind(lnTuningTraining);
