/**
 * Training (IA)³ (`method: { type: 'ia3', ia3: { target_modules, feedforward_modules } }`), as
 * PEFT's tuners/ia3 defines it:
 * - which modules: IA3Config's target_modules / feedforward_modules (null: the model type's
 *   defaults, utils/constants.py TRANSFORMERS_MODELS_TO_IA3_{TARGET,FEEDFORWARD}_MODULES_MAPPING,
 *   applied by IA3Model._prepare_adapter_config), matched by the rules the served `ia3` kind parses
 *   the result with (ia3.ts); feedforward_modules must be a subset of target_modules
 *   (IA3Config.__post_init__), a 400 otherwise;
 * - the parameter: `ia3_l`, [1, in] for a feed-forward module, else [out, 1] (layer.py
 *   `update_layer`), initialised to ones (init_ia3_weights=True, `reset_ia3_parameters`): training
 *   starts from the base model's outputs;
 * - the forward: `Linear.forward` multiplies a feed-forward module's input by ia3_l.flatten()
 *   before the base layer, any other module's whole output (bias included) after it;
 * - the files: IA3Config as save_pretrained writes it, and `base_model.model.<module>.ia3_l` in
 *   PEFT's shapes.
 * PEFT's other IA3Config fields are refused (a 400 naming them): init_ia3_weights=False would be a
 * torch.randn start, modules_to_save trains whole modules, and fan_in_fan_out PEFT sets itself.
 */
import { z } from 'zod';
import { allProjections, type ArchitectureSpec, type ProjectionSpec } from '../../model/architecture.js';
import type { TrainingHooks } from '../../model/delta-hooks.js';
import type { TrainableParam } from '../../model/lower-training.js';
import { ConfigFields, type JsonObject } from '../peft/config-fields.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind } from '../training.js';
import { IA3_DEFAULT_FEEDFORWARD, IA3_DEFAULT_TARGETS, isFeedforward, readFeedforward } from './ia3.js';
import { adapterConfig, encodeAdapter, loadStoredValues, ModuleField, readAdapter, targetedModules, throwProblems, writtenModules } from './peft-vector-training.js';

/** `method.ia3`: IA3Config's targeting fields, PEFT's names and defaults. */
export const Ia3TrainingOptions = z.object({ target_modules: ModuleField, feedforward_modules: ModuleField }).strict();

export type Ia3TrainingOptions = z.infer<typeof Ia3TrainingOptions>;

/** IA3 options resolved against a backbone: each IA3 layer, and the config fields as written. */
export interface Ia3Layout {
  /** Module paths in the backbone's order; feed-forward ones scale their input. */
  modules: { path: string; feedforward: boolean }[];
  targetModules: string | string[];
  feedforwardModules: string | string[];
  excludeModules: string | string[] | null;
}

/** The trainable tensor's name: PEFT's key without `base_model.model.`. */
export const ia3Param = (module: string) => `${module}.ia3_l`;

export const ia3Training: TrainableKind<Ia3TrainingOptions, Ia3Layout> = {
  name: 'ia3',
  deltaKind: 'ia3',
  graphVersion: 1,
  options: Ia3TrainingOptions,

  resolve(arch, o): Ia3Layout {
    const targetModules = writtenModules(o.target_modules, IA3_DEFAULT_TARGETS[arch.family]);
    let feedforwardModules = writtenModules(o.feedforward_modules, IA3_DEFAULT_FEEDFORWARD[arch.family]);
    // PEFT would save the default feed-forward names beside a target list that lacks them, a config
    // its own IA3Config refuses to load (not a subset); the names outside the targets are dropped.
    if (o.feedforward_modules === null && Array.isArray(targetModules) && Array.isArray(feedforwardModules)) feedforwardModules = feedforwardModules.filter((n) => targetModules.includes(n));
    if (targetModules === null) throw new TrainingOptionsError('target_modules', `PEFT has no default IA3 target_modules for model type '${arch.family}'; list them`);
    if (feedforwardModules === null) throw new TrainingOptionsError('feedforward_modules', `PEFT has no default IA3 feedforward_modules for model type '${arch.family}'; list them`);
    return layoutFrom({ target_modules: targetModules, feedforward_modules: feedforwardModules, exclude_modules: null }, arch);
  },

  params(arch, l): TrainableParam[] {
    const projections = byPath(arch);
    return l.modules.map(({ path, feedforward }) => {
      const p = projections.get(path)!;
      return { name: ia3Param(path), shape: feedforward ? [1, p.inFeatures] : [p.outFeatures, 1] };
    });
  },

  init(arch, l) {
    return new Map(ia3Training.params(arch, l).map(({ name, shape }) => [name, new Float32Array(shape[0]! * shape[1]!).fill(1)]));
  },

  fromDelta(files, arch) {
    const { config, tensor } = readAdapter(files);
    // The fields the served kind reads (IA3Config has no layers_to_transform), nulls as PEFT fills them.
    const fields = { target_modules: writtenModules(nullable(config['target_modules']), IA3_DEFAULT_TARGETS[arch.family]), feedforward_modules: writtenModules(nullable(config['feedforward_modules']), IA3_DEFAULT_FEEDFORWARD[arch.family]), exclude_modules: config['exclude_modules'] ?? null };
    const options = layoutFrom(fields, arch);
    const params = loadStoredValues(ia3Training.init(arch, options, 0), tensor); // a targeted module the file lacks keeps ones, as PEFT loads it
    return { options, params };
  },

  hooks: (arch, l) => ia3TrainingHooks(l),

  write(arch, l, params, meta) {
    const config = adapterConfig(meta.baseModel, {
      peft_type: 'IA3',
      target_modules: l.targetModules,
      feedforward_modules: l.feedforwardModules,
      exclude_modules: l.excludeModules,
      fan_in_fan_out: arch.blocks[0]?.o.layout === 'in_out', // PEFT sets it for Conv1D (model.py _create_new_module)
      init_ia3_weights: true,
    });
    return encodeAdapter(config, ia3Training.params(arch, l), params);
  },
};

/**
 * The IA3 layers for config fields as PEFT's config holds them after `_prepare_adapter_config`
 * (no nulls): targeted linear layers of the blocks, each feed-forward or not.
 */
function layoutFrom(config: JsonObject, arch: ArchitectureSpec): Ia3Layout {
  const fields = new ConfigFields(config);
  const feedforward = readFeedforward(fields, arch.family);
  throwProblems(fields, 'feedforward_modules');
  const projections = byPath(arch);
  const modules = targetedModules(config, undefined, arch).map((m) => {
    if (!projections.has(m.path)) throw new TrainingOptionsError('target_modules', `selects '${m.path}', a ${m.kind} module; IA3 applies to the transformer blocks' linear layers only`);
    return { path: m.path, feedforward: isFeedforward(feedforward, m.path) };
  });
  const asWritten = (v: unknown) => (v === undefined ? null : (v as string | string[] | null));
  return { modules, targetModules: config['target_modules'] as string | string[], feedforwardModules: config['feedforward_modules'] as string | string[], excludeModules: asWritten(config['exclude_modules']) };
}

/** A stored config's module field (validated by the served kind when stored). */
const nullable = (value: unknown) => (value ?? null) as string | string[] | null;

/** x · ia3_l before a feed-forward module's weight, y · ia3_l after any other's: PEFT's Linear.forward. */
function ia3TrainingHooks(l: Ia3Layout): TrainingHooks {
  const feedforward = new Set(l.modules.filter((m) => m.feedforward).map((m) => m.path));
  const output = new Set(l.modules.filter((m) => !m.feedforward).map((m) => m.path));
  return {
    kind: 'ia3',
    projectionInput(ctx, p, x) {
      if (!feedforward.has(p.modulePath)) return x;
      return ctx.g.apply('Mul', [x, ctx.param(ia3Param(p.modulePath))]); // [N, in] · [1, in]
    },
    projectionOutput(ctx, p, _x, y) {
      if (!output.has(p.modulePath)) return y;
      const { g } = ctx;
      const scale = g.apply('Reshape', [ctx.param(ia3Param(p.modulePath)), g.ints([1, p.outFeatures])]); // [out, 1] → [1, out]
      return g.apply('Mul', [y, scale]); // [N, out]
    },
  };
}

function byPath(arch: ArchitectureSpec): Map<string, ProjectionSpec> {
  return new Map(allProjections(arch).flat().map((p) => [p.modulePath, p]));
}

registerTrainableKind(ia3Training);
