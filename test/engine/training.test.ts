import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AdamWHyperparameters } from '../../src/engine/trainer.js';
import { maxAbsDiff } from '../helpers.js';
import { checkFixtureTrajectory, FIXTURE_HYPER, fixtureBatch, fixtureCheckpoint, fixtureInitialState, loraTrainer, trainReference } from '../training-fixture.js';

test('10 AdamW steps from lora_all_r8 match PEFT + PyTorch: losses, step-0 gradients, grad norms and final weights', async () => {
  await checkFixtureTrajectory('cpu');
});

/** torch.optim.AdamW + clip_grad_norm_ in float64, from the raw gradients the graph reports. */
function referenceAdamW(params: Map<string, Float64Array>, m: Map<string, Float64Array>, v: Map<string, Float64Array>, grads: Map<string, Float32Array>, t: number, h: AdamWHyperparameters): void {
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
  const ckpt = fixtureCheckpoint();
  const { state, layout } = fixtureInitialState(ckpt);
  const hyper = { ...FIXTURE_HYPER, weightDecay: 0.1, maxGradNorm: 0.5 };
  const split = await loraTrainer(ckpt, layout, state, { rows: 1, seqLen: 16 });
  try {
    const expected = new Map([...state.params].map(([k, p]) => [k, Float64Array.from(p)]));
    const zeros = () => new Map([...state.params].map(([k, p]) => [k, new Float64Array(p.length)]));
    const [m, v] = [zeros(), zeros()];
    const whole = fixtureBatch();
    const row = (r: number) => ({ inputIds: whole.inputIds.slice(r * 16, r * 16 + 16), targetIds: whole.targetIds.slice(r * 16, r * 16 + 16), targetMask: whole.targetMask.slice(r * 16, r * 16 + 16) });
    for (let t = 1; t <= 3; t++) {
      const { loss, gradients } = await split.step([row(0), row(1)], hyper);
      if (t === 1) assert.ok(Math.abs(loss - trainReference.run.losses[0]!) <= 1e-4, `two micro-batches give the batch loss: ${loss}`);
      referenceAdamW(expected, m, v, gradients, t, hyper);
    }
    for (const [name, want] of expected) assert.ok(maxAbsDiff(split.snapshot().params.get(name)!, want) <= 1e-6, `${name}: ${maxAbsDiff(split.snapshot().params.get(name)!, want)}`);
  } finally {
    await split.release();
  }
});

test('evaluate gives the batch loss without changing the parameters', async () => {
  const ckpt = fixtureCheckpoint();
  const { state, layout } = fixtureInitialState(ckpt);
  const trainer = await loraTrainer(ckpt, layout, state, { rows: 2, seqLen: 16 });
  try {
    const loss = await trainer.evaluate([fixtureBatch()]);
    assert.ok(Math.abs(loss - trainReference.run.losses[0]!) <= 1e-4, `${loss}`);
    assert.equal(trainer.snapshot(), state);
    assert.equal((await trainer.step([fixtureBatch()], FIXTURE_HYPER)).loss, loss);
  } finally {
    await trainer.release();
  }
});
