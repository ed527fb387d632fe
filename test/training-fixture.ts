import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { LoraLayout } from '../src/deltas/kinds/lora-training.js';
import { trainableKind } from '../src/deltas/training.js';
import { freshTrainerState, Trainer, type MicroBatch, type TrainerOptions, type TrainerState } from '../src/engine/trainer.js';
import type { Device } from '../src/engine/model-runtime.js';
import { openCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { parseSafetensors } from '../src/model/safetensors.js';
import { packBatch } from '../src/training/dataset.js';
import { FIXTURE, maxAbsDiff, tempDir } from './helpers.js';

/**
 * The fixture's training trajectory (transformers 5.17 + PEFT 0.21 + torch AdamW), shared by the
 * CPU and WebGPU suites: from `lora_all_r8`, both rows as one batch, 10 steps at lr 1e-3.
 */
interface TrainReference {
  input_ids: number[][];
  labels: number[][];
  run: { hparams: { lr: number }; losses: number[]; grad_norms_before_clip: number[] };
}

export const trainReference: TrainReference = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'train_reference.json'), 'utf8'));
export const FIXTURE_HYPER = { lr: trainReference.run.hparams.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: Infinity };
const PEFT_PREFIX = 'base_model.model.';

export const fixtureCheckpoint = (): Checkpoint => openCheckpoint(path.join(FIXTURE, 'base'));

/** The fixture adapter `lora_all_r8` (r 8, alpha 16, every projection) as a fresh trainer state, continued from as a job would. */
export function fixtureInitialState(ckpt: Checkpoint): { state: TrainerState; layout: LoraLayout } {
  const dir = path.join(FIXTURE, 'lora_all_r8');
  const files = { config: fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'), weights: fs.readFileSync(path.join(dir, 'adapter_model.safetensors')) };
  const { options, params } = trainableKind('lora').fromDelta(files, ckpt.arch);
  const layout = options as LoraLayout;
  assert.deepEqual([layout.r, layout.alpha, layout.useRslora, layout.modules.length], [8, 16, false, 7 * ckpt.arch.numLayers]);
  return { state: freshTrainerState(params), layout };
}

/** A LoRA trainer on the CPU (unless `device` says otherwise) for the fixture's layout and a micro-batch shape. */
export function loraTrainer(ckpt: Checkpoint, layout: LoraLayout, state: TrainerState, shape: { rows: number; seqLen: number }, device: TrainerOptions['device'] = 'cpu'): Promise<Trainer> {
  return Trainer.create(ckpt, { cacheDir: tempDir(), device, ...shape, kind: 'lora', options: layout }, state);
}

/** The two reference rows as one micro-batch of 2 x 16. */
export function fixtureBatch(): MicroBatch {
  const packed = packBatch(trainReference.input_ids.map((ids, i) => ({ inputIds: ids, labels: trainReference.labels[i]! })), 16, 0);
  return { inputIds: packed.inputIds, targetIds: Int32Array.from(packed.targetIds, Number), targetMask: packed.targetMask };
}

function referenceTensors(file: string): Map<string, Float32Array> {
  const { header, tensor } = parseSafetensors(fs.readFileSync(file), file);
  return new Map([...header.tensors.keys()].map((key) => [key.slice(PEFT_PREFIX.length), tensor(key)]));
}

function relativeError(got: Float32Array, want: Float32Array): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < want.length; i++) {
    diff += (got[i]! - want[i]!) ** 2;
    norm += want[i]! ** 2;
  }
  return Math.sqrt(diff / norm);
}

/** Runs the 10 reference steps on `device` and asserts losses, step-0 gradients, grad norms and final weights. */
export async function checkFixtureTrajectory(device: Device): Promise<void> {
  const ckpt = fixtureCheckpoint();
  const { state, layout } = fixtureInitialState(ckpt);
  const trainer = await loraTrainer(ckpt, layout, state, { rows: 2, seqLen: 16 }, device);
  try {
    const step0 = referenceTensors(path.join(FIXTURE, 'train_step0_grads.safetensors'));
    const { losses, grad_norms_before_clip: norms } = trainReference.run;
    for (let step = 0; step < 10; step++) {
      const { loss, gradNorm, gradients } = await trainer.step([fixtureBatch()], FIXTURE_HYPER);
      assert.ok(Math.abs(loss - losses[step]!) <= 1e-4, `step ${step} loss ${loss} vs ${losses[step]}`);
      assert.ok(Math.abs(gradNorm - norms[step]!) <= 1e-4 * norms[step]!, `step ${step} grad norm ${gradNorm} vs ${norms[step]}`);
      if (step > 0) continue;
      assert.equal(step0.size, trainer.params.length);
      for (const [name, want] of step0) assert.ok(relativeError(gradients.get(name)!, want) <= 1e-4, `step-0 gradient ${name}: relative error ${relativeError(gradients.get(name)!, want)}`);
    }
    const after10 = referenceTensors(path.join(FIXTURE, 'train_after10', 'adapter_model.safetensors'));
    const params = trainer.snapshot().params;
    assert.equal(after10.size, params.size);
    for (const [name, want] of after10) assert.ok(maxAbsDiff(params.get(name)!, want) <= 1e-4, `${name} after 10 steps: max abs diff ${maxAbsDiff(params.get(name)!, want)}`);
  } finally {
    await trainer.release();
  }
}
