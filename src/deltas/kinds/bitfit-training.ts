/**
 * Training BitFit (`method: { type: 'bitfit', bitfit: { target_modules } }`): bias tuning (Ben
 * Zaken et al., 2022), trained into deltaserve's PEFT-style BITFIT format that the served
 * `bitfit` kind reads (bitfit.ts: `base_model.model.<module>.bias` [out], the full tuned bias).
 * PEFT has no BitFit, so the semantics are that format's:
 * - which layers: target_modules by PEFT's matching rules (a list of names or `.name` suffixes, a
 *   full-match regex, or 'all-linear'); null — the default — is every linear layer of the blocks
 *   (the output head is not one), as the served kind reads a null target_modules;
 * - the parameter: each targeted layer's bias [out], starting from the base's own bias (Qwen2's
 *   q/k/v, GPT-2's every layer) or zeros where the base has none (Llama): "BitFit tunes the
 *   biases", and a fresh delta computes exactly what the base does;
 * - the forward: y = x Wᵀ + b_tuned, the tuned bias *replacing* the base's, computed as the served
 *   kind does, y_base + (b_tuned − b_base);
 * - the files: adapter_config.json in PEFT's style (sorted keys, target_modules as given,
 *   'all-linear' for the default; a continued delta keeps its exclude/layers fields) and the
 *   tuned biases, F32.
 */
import { z } from 'zod';
import { allProjections, type ArchitectureSpec, type ProjectionSpec } from '../../model/architecture.js';
import type { TrainingHooks } from '../../model/delta-hooks.js';
import type { TrainableParam } from '../../model/lower-training.js';
import type { JsonObject } from '../peft/config-fields.js';
import { registerTrainableKind, TrainingOptionsError, type TrainableKind, type TrainingBackbone } from '../training.js';
import { adapterConfig, encodeAdapter, loadStoredValues, ModuleField, readAdapter, targetedModules } from './peft-vector-training.js';

/** `method.bitfit`: which linear layers get a trainable bias (default: all of them). */
export const BitfitTrainingOptions = z.object({ target_modules: ModuleField }).strict();

export type BitfitTrainingOptions = z.infer<typeof BitfitTrainingOptions>;

/** The config's targeting fields, as written (a stored delta's may use all four). */
type Targeting = Record<(typeof TARGETING)[number], unknown>;
const TARGETING = ['target_modules', 'exclude_modules', 'layers_to_transform', 'layers_pattern'] as const;

/** BitFit options resolved against a backbone: the tuned layers' module paths, and the targeting fields as written. */
export interface BitfitLayout {
  modules: string[];
  targeting: Targeting;
}

/** The trainable tensor's name: the file's key without `base_model.model.`. */
export const bitfitParam = (module: string) => `${module}.bias`;

export const bitfitTraining: TrainableKind<BitfitTrainingOptions, BitfitLayout> = {
  name: 'bitfit',
  deltaKind: 'bitfit',
  graphVersion: 1,
  options: BitfitTrainingOptions,

  resolve: (arch, o) => layoutFrom({ target_modules: o.target_modules ?? 'all-linear' }, arch),

  params(arch, l): TrainableParam[] {
    const projections = byPath(arch);
    return l.modules.map((module) => ({ name: bitfitParam(module), shape: [projections.get(module)!.outFeatures] }));
  },

  init(arch, l, _seed, backbone) {
    const projections = byPath(arch);
    return new Map(l.modules.map((module) => [bitfitParam(module), baseBias(projections.get(module)!, backbone)]));
  },

  fromDelta(files, arch, backbone) {
    const { config, tensor } = readAdapter(files);
    const options = layoutFrom(config, arch);
    const params = loadStoredValues(bitfitTraining.init(arch, options, 0, backbone), tensor); // a targeted layer the file lacks keeps the base bias, as served
    return { options, params };
  },

  hooks: (arch, l) => bitfitTrainingHooks(l),

  write(arch, l, params, meta) {
    const config = adapterConfig(meta.baseModel, { peft_type: 'BITFIT', ...l.targeting });
    return encodeAdapter(config, bitfitTraining.params(arch, l), params);
  },
};

/** The targeted layers for config fields as written (target_modules never null): linear layers of the blocks only. */
function layoutFrom(config: JsonObject, arch: ArchitectureSpec): BitfitLayout {
  const projections = byPath(arch);
  const targeting = Object.fromEntries(TARGETING.map((f) => [f, config[f] ?? null])) as Targeting;
  targeting.target_modules ??= 'all-linear';
  if (Array.isArray(targeting.target_modules)) targeting.target_modules = [...new Set(targeting.target_modules as string[])].sort();
  const modules = targetedModules(targeting as JsonObject, undefined, arch).map((m) => {
    if (!projections.has(m.path)) throw new TrainingOptionsError('target_modules', `selects '${m.path}', a${m.kind === 'head' ? 'n output head' : ` ${m.kind}`} module; BitFit tunes the biases of the transformer blocks' linear layers only`);
    return m.path;
  });
  return { modules, targeting };
}

/** The base's bias of a layer as float32, or zeros where it has none. */
function baseBias(p: ProjectionSpec, backbone: TrainingBackbone | undefined): Float32Array {
  if (!p.bias) return new Float32Array(p.outFeatures);
  if (!backbone) throw new Error(`bitfit: initialising ${p.modulePath} needs the backbone's bias ${p.bias}`);
  return Float32Array.from(backbone.weight(p.bias));
}

/** y + (b_tuned − b_base) on the tuned layers (y + b_tuned where the base has no bias). */
function bitfitTrainingHooks(l: BitfitLayout): TrainingHooks {
  const tuned = new Set(l.modules);
  return {
    kind: 'bitfit',
    projectionOutput(ctx, p, _x, y) {
      if (!tuned.has(p.modulePath)) return y;
      const { g } = ctx;
      const bias = ctx.param(bitfitParam(p.modulePath)); // [out]
      const change = p.bias ? g.apply('Sub', [bias, ctx.weight(p.bias)]) : bias; // [out]
      return g.apply('Add', [y, change]); // [N, out]
    },
  };
}

function byPath(arch: ArchitectureSpec): Map<string, ProjectionSpec> {
  return new Map(allProjections(arch).flat().map((p) => [p.modulePath, p]));
}

registerTrainableKind(bitfitTraining);
