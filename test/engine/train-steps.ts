/**
 * Helpers for the trainable kinds' engine tests (training-ia3, training-bitfit,
 * training-ln-tuning): a tiny checkpoint, the frozen backbone a job hands a kind, a short
 * training run, a kind's refusal of options, and a written delta as a directory.
 */
import fs from 'node:fs';
import path from 'node:path';
import { trainableKind, TrainingOptionsError, type DeltaFileBytes, type TrainingBackbone } from '../../src/deltas/training.js';
import type { ArchitectureSpec } from '../../src/model/architecture.js';
import { freshTrainerState, Trainer } from '../../src/engine/trainer.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { seededNormal } from '../../src/model/random.js';
import { readCheckpointRows, readCheckpointWeight } from '../../src/model/weight-data.js';
import { microBatches } from '../../src/training/batches.js';
import { tempDir } from '../helpers.js';
import { writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';

export const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };

/** Two rows of different lengths, the first with a masked prompt (as the LoRA oracle test uses). */
export const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61, 3, 88], labels: [-100, -100, -100, -100, 42, 100, 7, 61, 3, 88] },
  { inputIds: [100, 6, 77, 120, 33, 210, 211], labels: [100, 6, 77, 120, 33, 210, 211] },
];

/** A tiny random checkpoint of `family` (seed 3) in a fresh directory. */
export function tinyModel(family: TinyFamily): string {
  const dir = tempDir();
  writeTinyCheckpoint(dir, family, { seed: 3 });
  return dir;
}

/** `params` plus `scale`·N(0, 1) noise per element: trained-looking values away from the start. */
export function perturbed(params: ReadonlyMap<string, Float32Array>, seed: number, scale: number): Map<string, Float32Array> {
  const normal = seededNormal(seed);
  return new Map([...params].map(([name, v]) => [name, v.map((x) => x + scale * normal())]));
}

/**
 * How `kind` answers options on `arch`: `'<field>: <message>'` of the TrainingOptionsError it
 * throws, or 'accepted'.
 *
 * @example const refusal = refusalOf('bitfit', arch); assert.match(refusal({ target_modules: 'lm_head' }), /^target_modules: /);
 */
export function refusalOf(kind: string, arch: ArchitectureSpec): (options: unknown) => string {
  const trainable = trainableKind(kind);
  return (options) => {
    try {
      trainable.resolve(arch, trainable.options.parse(options), LIMITS);
    } catch (err) {
      if (err instanceof TrainingOptionsError) return `${err.field}: ${err.message}`;
      throw err;
    }
    return 'accepted';
  };
}

/** A fresh directory holding the written delta's adapter_config.json and adapter_model.safetensors. */
export function adapterDir(files: DeltaFileBytes): string {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), files.config);
  fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), files.weights);
  return dir;
}

/**
 * The backbone as the job runner gives it (src/server/training-service.ts): the checkpoint's frozen weights.
 *
 * @example trainableKind('bitfit').init(arch, resolved, 7, backboneOf(modelDir))
 */
export function backboneOf(modelDir: string): TrainingBackbone {
  const ckpt = openCheckpoint(modelDir);
  return { weight: (name) => readCheckpointWeight(ckpt, name), weightRows: (name, rows) => readCheckpointRows(ckpt, name, rows) };
}

/** The kind's options resolved and its initial parameters, as a job creates them. */
export function initialise(kind: string, modelDir: string, options: unknown, seed = 7) {
  const trainable = trainableKind(kind);
  const { arch } = openCheckpoint(modelDir);
  const backbone = backboneOf(modelDir);
  const resolved = trainable.resolve(arch, trainable.options.parse(options), LIMITS, backbone);
  return { arch, resolved, params: trainable.init(arch, resolved, seed, backbone) };
}

/**
 * `steps` AdamW steps (lr 2e-2, no clipping) on EXAMPLES from the kind's initialisation; the loss of each step.
 *
 * @example const losses = await trainSteps('ia3', modelDir, {}, 20); // losses[19] < losses[0]
 */
export async function trainSteps(kind: string, modelDir: string, options: unknown, steps: number): Promise<number[]> {
  const { resolved, params } = initialise(kind, modelDir, options);
  const trainer = await Trainer.create(openCheckpoint(modelDir), { cacheDir: tempDir(), device: 'cpu', rows: 2, seqLen: 16, kind, options: resolved }, freshTrainerState(params));
  const { batches } = microBatches(EXAMPLES, 2, 16, 0);
  const losses: number[] = [];
  try {
    for (let s = 0; s < steps; s++) losses.push((await trainer.step(batches, { lr: 2e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: Infinity })).loss);
  } finally {
    await trainer.release();
  }
  return losses;
}
