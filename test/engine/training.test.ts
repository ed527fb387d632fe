import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { loraWeightsFromPeft } from '../../src/deltas/peft-lora-write.js';
import { LoraTrainer, type TrainerState } from '../../src/engine/lora-trainer.js';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint.js';
import { parseSafetensors } from '../../src/model/safetensors.js';
import { packBatch } from '../../src/training/dataset.js';
import { FIXTURE, maxAbsDiff, tempDir } from '../helpers.js';

interface TrainReference {
  input_ids: number[][];
  labels: number[][];
  run: { hparams: { lr: number }; losses: number[]; grad_norms_before_clip: number[] };
}

const reference: TrainReference = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'train_reference.json'), 'utf8'));
const PEFT_PREFIX = 'base_model.model.';
const HYPER = { lr: reference.run.hparams.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: Infinity };

let ckpt: Checkpoint;
let trainer: LoraTrainer;

/** The fixture adapter `lora_all_r8` as a fresh trainer state (PEFT keys -> `<module>.lora_A`). */
function initialState(): { state: TrainerState; modules: string[] } {
  const dir = path.join(FIXTURE, 'lora_all_r8');
  const weights = loraWeightsFromPeft(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'), fs.readFileSync(path.join(dir, 'adapter_model.safetensors')), ckpt.arch);
  const params = new Map<string, Float32Array>();
  for (const [module, { a, b }] of weights.modules) {
    params.set(`${module}.lora_A`, a);
    params.set(`${module}.lora_B`, b);
  }
  const zeros = () => new Map([...params].map(([k, v]) => [k, new Float32Array(v.length)]));
  return { state: { step: 0, params, m: zeros(), v: zeros() }, modules: [...weights.modules.keys()] };
}

function referenceTensors(file: string): Map<string, Float32Array> {
  const { header, tensor } = parseSafetensors(fs.readFileSync(file), file);
  return new Map([...header.tensors.keys()].map((key) => [key.slice(PEFT_PREFIX.length).replace(/\.weight$/, ''), tensor(key)]));
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

const batch = () => {
  const packed = packBatch(reference.input_ids.map((ids, i) => ({ inputIds: ids, labels: reference.labels[i]! })), 16, 0);
  return { inputIds: packed.inputIds, targetIds: Int32Array.from(packed.targetIds, Number), targetMask: packed.targetMask };
};

before(async () => {
  ckpt = openCheckpoint(path.join(FIXTURE, 'base'));
  const { state, modules } = initialState();
  trainer = await LoraTrainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows: 2, seqLen: 16, lora: { rank: 8, alpha: 16, useRslora: false, modules } }, state);
});
after(() => trainer?.release());

test('10 AdamW steps from lora_all_r8 match PEFT + PyTorch: losses, step-0 gradients, grad norms and final weights', async () => {
  const step0 = referenceTensors(path.join(FIXTURE, 'train_step0_grads.safetensors'));
  for (let step = 0; step < 10; step++) {
    const { loss, gradNorm, gradients } = await trainer.step([batch()], HYPER);
    assert.ok(Math.abs(loss - reference.run.losses[step]!) <= 1e-4, `step ${step} loss ${loss} vs ${reference.run.losses[step]}`);
    const wantNorm = reference.run.grad_norms_before_clip[step]!;
    assert.ok(Math.abs(gradNorm - wantNorm) <= 1e-4 * wantNorm, `step ${step} grad norm ${gradNorm} vs ${wantNorm}`);
    if (step === 0) {
      assert.equal(step0.size, trainer.params.length);
      for (const [name, want] of step0) assert.ok(relativeError(gradients!.get(name)!, want) <= 1e-4, `step-0 gradient ${name}: relative error ${relativeError(gradients!.get(name)!, want)}`);
    }
  }
  const after10 = referenceTensors(path.join(FIXTURE, 'train_after10', 'adapter_model.safetensors'));
  const params = trainer.snapshot().params;
  assert.equal(after10.size, params.size);
  for (const [name, want] of after10) assert.ok(maxAbsDiff(params.get(name)!, want) <= 1e-4, `${name} after 10 steps: max abs diff ${maxAbsDiff(params.get(name)!, want)}`);
});

/** torch.optim.AdamW + clip_grad_norm_ in float64, from the raw gradients the graph reports. */
function referenceAdamW(params: Map<string, Float64Array>, m: Map<string, Float64Array>, v: Map<string, Float64Array>, grads: Map<string, Float32Array>, t: number, h: typeof HYPER): void {
  let sq = 0;
  for (const g of grads.values()) for (const x of g) sq += x * x;
  const coef = Math.min(h.maxGradNorm / (Math.sqrt(sq) + 1e-6), 1);
  for (const [name, p] of params) {
    const g = grads.get(name)!;
    const [mi, vi] = [m.get(name)!, v.get(name)!];
    for (let i = 0; i < p.length; i++) {
      const gi = g[i]! * coef;
      p[i] = p[i]! * (1 - h.lr * h.weightDecay);
      mi[i] = h.beta1 * mi[i]! + (1 - h.beta1) * gi;
      vi[i] = h.beta2 * vi[i]! + (1 - h.beta2) * gi * gi;
      const denom = Math.sqrt(vi[i]!) / Math.sqrt(1 - h.beta2 ** t) + h.eps;
      p[i] = p[i]! - (h.lr / (1 - h.beta1 ** t)) * (mi[i]! / denom);
    }
  }
}

test('clipping, weight decay and micro-batches: the graph agrees with a float64 AdamW on its own gradients', async () => {
  const { state, modules } = initialState();
  const hyper = { ...HYPER, weightDecay: 0.1, maxGradNorm: 0.5 };
  const lora = { rank: 8, alpha: 16, useRslora: false, modules };
  const split = await LoraTrainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows: 1, seqLen: 16, lora }, state);
  try {
    const expected = new Map([...state.params].map(([k, p]) => [k, Float64Array.from(p)]));
    const zeros = () => new Map([...state.params].map(([k, p]) => [k, new Float64Array(p.length)]));
    const [m, v] = [zeros(), zeros()];
    const whole = batch();
    const rows = [0, 1].map((r) => ({ inputIds: whole.inputIds.slice(r * 16, r * 16 + 16), targetIds: whole.targetIds.slice(r * 16, r * 16 + 16), targetMask: whole.targetMask.slice(r * 16, r * 16 + 16) }));
    for (let t = 1; t <= 3; t++) {
      const { loss, gradients } = await split.step(rows, hyper);
      if (t === 1) assert.ok(Math.abs(loss - reference.run.losses[0]!) <= 1e-4, `two micro-batches give the batch loss: ${loss}`);
      referenceAdamW(expected, m, v, gradients!, t, hyper);
    }
    for (const [name, want] of expected) assert.ok(maxAbsDiff(split.snapshot().params.get(name)!, want) <= 1e-6, `${name}: ${maxAbsDiff(split.snapshot().params.get(name)!, want)}`);
  } finally {
    await split.release();
  }
});
