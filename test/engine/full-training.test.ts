/**
 * Full fine-tuning on each family: the parameters are exactly the checkpoint's tensors; the first
 * AdamW step equals the float64 reference (test/oracle/training-step.ts: the oracle's forward with
 * the parameters as its weights, central differences, PyTorch's AdamW), with every tensor checked;
 * and 20 steps on a small task lower the loss.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { backboneParams, FULL_BYTES_PER_PARAMETER, fullTraining } from '../../src/deltas/kinds/full-training.js';
import type { TrainingBackbone } from '../../src/deltas/training.js';
import { freshTrainerState, Trainer } from '../../src/engine/trainer.js';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint.js';
import { readSafetensorsHeader } from '../../src/model/safetensors.js';
import { readCheckpointRows, readCheckpointWeight } from '../../src/model/weight-data.js';
import { microBatches } from '../../src/training/batches.js';
import { tempDir } from '../helpers.js';
import { writeTinyCheckpoint, type TinyFamily } from '../oracle/checkpoints.js';
import { checkFirstStep } from '../oracle/training-step.js';
import type { ForwardWeights, OracleWeights } from '../oracle/transformer.js';

const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };

/** Two rows of different lengths, the first with a masked prompt. */
const EXAMPLES = [
  { inputIds: [5, 17, 250, 9, 42, 100, 7, 61, 3, 88], labels: [-100, -100, -100, -100, 42, 100, 7, 61, 3, 88] },
  { inputIds: [100, 6, 77, 120, 33, 210, 211], labels: [34, 6, 77, 120, 33, 210, 211] },
];

function backboneOf(ckpt: Checkpoint): TrainingBackbone {
  return { weight: (name) => readCheckpointWeight(ckpt, name), weightRows: (name, rows) => readCheckpointRows(ckpt, name, rows) };
}

/** The checkpoint's weights with the parameters in place of those they name (all of them, for full fine-tuning). */
function asWeights(base: OracleWeights, params: ReadonlyMap<string, Float64Array>): ForwardWeights {
  return new Map([...base].map(([name, t]) => [name, params.has(name) ? { shape: t.shape, data: params.get(name)! } : t]));
}

/**
 * Elements whose gradient is not structurally zero where most are: the embedding rows of the
 * batch's tokens (every row too, through a tied LM head), the position rows the batch uses.
 */
function sampler(ckpt: Checkpoint) {
  const { arch } = ckpt;
  const H = arch.hiddenSize;
  const tokens = [...new Set(EXAMPLES.flatMap((e) => e.inputIds))];
  return (name: string): number[] | undefined => {
    if (name === arch.embedTokens) return [tokens[0]! * H + 3, tokens[5]! * H + 17, tokens[9]! * H + H - 1, 299 * H + 5];
    if (arch.positions.kind === 'learned' && name === arch.positions.weight) return [2, H + 30, 9 * H + 63, 40 * H];
    return undefined;
  };
}

describe('full fine-tuning: the first AdamW step equals the float64 oracle', () => {
  for (const family of ['llama', 'qwen2', 'gpt2'] as TinyFamily[]) {
    it(`${family}: every tensor of the checkpoint is a parameter, each checked`, async () => {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const ckpt = openCheckpoint(modelDir);
      const names = backboneParams(ckpt.arch).map((p) => p.name);
      const stored = [...readSafetensorsHeader(path.join(modelDir, 'model.safetensors')).tensors.keys()];
      assert.deepEqual([...names].sort(), [...stored].sort(), 'the parameters are the checkpoint tensors, each once');
      const kinds = family === 'gpt2' ? ['wte', 'wpe', 'ln_1.weight', 'ln_1.bias', 'c_attn.weight', 'c_attn.bias', 'attn.c_proj.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'ln_f.bias'] : ['embed_tokens', 'input_layernorm', 'q_proj.weight', 'k_proj.weight', 'v_proj.weight', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'post_attention_layernorm', 'model.norm', ...(family === 'qwen2' ? ['q_proj.bias', 'k_proj.bias', 'v_proj.bias'] : ['lm_head'])];
      for (const kind of kinds) assert.ok(names.some((n) => n.includes(kind)), `no ${kind} parameter in ${names.join(', ')}`);
      const options = fullTraining.resolve(ckpt.arch, { init: 'base' }, LIMITS);
      const params = fullTraining.init(ckpt.arch, options, 0, backboneOf(ckpt));
      const report = await checkFirstStep({ kind: 'full', options: {}, modelDir, params, examples: EXAMPLES, oracleDeltas: () => [], oracleWeights: asWeights, sample: sampler(ckpt), samples: 3, limits: LIMITS });
      console.log(family, report);
      assert.ok(report.compared >= names.length * 2, `${report.compared} elements compared for ${names.length} tensors`);
    });
  }
});

describe('full fine-tuning: training', () => {
  it('20 steps on a small task lower the loss (llama, two micro-batches per step)', async () => {
    const modelDir = tempDir();
    writeTinyCheckpoint(modelDir, 'llama', { seed: 3 });
    const ckpt = openCheckpoint(modelDir);
    const options = fullTraining.resolve(ckpt.arch, { init: 'base' }, LIMITS);
    const trainer = await Trainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows: 1, seqLen: 16, kind: 'full', options }, freshTrainerState(fullTraining.init(ckpt.arch, options, 0, backboneOf(ckpt))));
    try {
      const { batches } = microBatches(EXAMPLES, 1, 16, 0);
      const hyper = { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };
      const losses: number[] = [];
      for (let i = 0; i < 20; i++) losses.push((await trainer.step(batches, hyper)).loss);
      const after = await trainer.evaluate(batches);
      console.log('losses', losses.map((l) => l.toFixed(3)).join(' '), '→', after.toFixed(4));
      assert.ok(after < 0.2 * losses[0]!, `loss ${losses[0]} → ${after}`);
    } finally {
      await trainer.release();
    }
  });

  it('refuses a model whose training state would exceed the budget, naming the numbers', () => {
    const modelDir = tempDir();
    writeTinyCheckpoint(modelDir, 'gpt2', { seed: 3 });
    const { arch } = openCheckpoint(modelDir);
    const count = backboneParams(arch).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    assert.equal(fullTraining.resolve(arch, { init: 'base' }, { ...LIMITS, maxTrainingBytes: count * FULL_BYTES_PER_PARAMETER }).parameters, count);
    assert.throws(() => fullTraining.resolve(arch, { init: 'base' }, { ...LIMITS, maxTrainingBytes: count * FULL_BYTES_PER_PARAMETER - 1 }), (err: Error & { field?: string }) => {
      assert.equal(err.field, 'init');
      assert.match(err.message, new RegExp(`${count} parameters × ${FULL_BYTES_PER_PARAMETER} bytes`));
      return true;
    });
  });
});

describe('full fine-tuning from scratch (init: random)', () => {
  const stats = (x: Float32Array) => {
    const mean = x.reduce((a, b) => a + b, 0) / x.length;
    return { mean, std: Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length) };
  };

  for (const family of ['llama', 'gpt2'] as TinyFamily[]) {
    it(`${family}: draws every tensor as transformers' _init_weights, from the job's seed, without reading the base`, () => {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const { arch } = openCheckpoint(modelDir);
      const options = fullTraining.resolve(arch, { init: 'random' }, LIMITS);
      assert.equal(options.init, 'random');
      const params = fullTraining.init(arch, options, 7);
      assert.deepEqual([...params.keys()], backboneParams(arch).map((p) => p.name));
      for (const { name, shape } of backboneParams(arch)) {
        const values = params.get(name)!;
        assert.equal(values.length, shape.reduce((a, b) => a * b, 1), name);
        const isNorm = /norm|ln_/.test(name);
        if (isNorm && name.endsWith('weight')) assert.ok(values.every((v) => v === 1), `${name}: ones`);
        else if (name.endsWith('bias')) assert.ok(values.every((v) => v === 0), `${name}: zeros`);
        else {
          const want = family === 'gpt2' && name.endsWith('c_proj.weight') ? 0.02 / Math.sqrt(2 * arch.numLayers) : 0.02;
          const { mean, std } = stats(values);
          assert.ok(Math.abs(std - want) < 0.15 * want && Math.abs(mean) < 0.2 * want, `${name}: mean ${mean}, std ${std}, want N(0, ${want}²)`);
        }
      }
      const again = fullTraining.init(arch, options, 7);
      const other = fullTraining.init(arch, options, 8);
      assert.deepEqual(again.get(arch.embedTokens), params.get(arch.embedTokens), 'the same seed gives the same weights');
      assert.notDeepEqual(other.get(arch.embedTokens), params.get(arch.embedTokens), 'another seed, other weights');
    });
  }
});
