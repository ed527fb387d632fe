import type { TrainerState } from '../engine/lora-trainer.js';
import type { LoraWeights } from '../deltas/peft-lora-write.js';
import { allProjections, type ArchitectureSpec } from '../model/architecture.js';
import { trainableParams, type LoraTrainingSpec } from '../model/lower-training.js';
import { mulberry32 } from '../model/random.js';

/**
 * A fresh LoRA as PEFT initialises one (`init_lora_weights=True`): A ~ U(-1/sqrt(in), 1/sqrt(in))
 * (kaiming_uniform_ with a = sqrt(5)), B = 0, so training starts from the base model's outputs.
 * Seeded, so a job's start is reproducible.
 *
 * @example freshLoraState(arch, { rank: 8, alpha: 16, useRslora: false, modules }, 42).params.size
 */
export function freshLoraState(arch: ArchitectureSpec, lora: LoraTrainingSpec, seed: number): TrainerState {
  const random = mulberry32(seed);
  const params = new Map<string, Float32Array>();
  for (const p of trainableParams(arch, lora)) {
    const values = new Float32Array(p.shape[0] * p.shape[1]);
    if (p.matrix === 'lora_A') {
      const bound = 1 / Math.sqrt(p.shape[1]);
      for (let i = 0; i < values.length; i++) values[i] = (2 * random() - 1) * bound;
    }
    params.set(p.name, values);
  }
  return withZeroMoments(params);
}

/** The trainer state that continues from an existing adapter's weights (moments start at zero). */
export function loraStateFromWeights(weights: LoraWeights): TrainerState {
  const params = new Map<string, Float32Array>();
  for (const [module, { a, b }] of weights.modules) {
    params.set(`${module}.lora_A`, a);
    params.set(`${module}.lora_B`, b);
  }
  return withZeroMoments(params);
}

/** Trainer parameters back to PEFT's per-module A/B. */
export function loraWeightsFromState(arch: ArchitectureSpec, lora: LoraTrainingSpec, targetModules: string[], state: TrainerState): LoraWeights {
  const modules: LoraWeights['modules'] = new Map();
  const params = trainableParams(arch, lora); // [A, B] per module, in order
  for (let i = 0; i < params.length; i += 2) {
    const [a, b] = [params[i]!, params[i + 1]!];
    modules.set(a.module, { a: state.params.get(a.name)!, b: state.params.get(b.name)!, inFeatures: a.shape[1], outFeatures: b.shape[0] });
  }
  const conv1d = allProjections(arch).flat().some((p) => p.layout === 'in_out' && modules.has(p.modulePath));
  return { r: lora.rank, alpha: lora.alpha, useRslora: lora.useRslora, targetModules, modules, ...(conv1d ? { fanInFanOut: true } : {}) };
}

function withZeroMoments(params: Map<string, Float32Array>): TrainerState {
  const zeros = () => new Map([...params].map(([name, p]) => [name, new Float32Array(p.length)]));
  return { step: 0, params, m: zeros(), v: zeros() };
}
