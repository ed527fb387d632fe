import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { trainableKind } from '../../src/deltas/training.js';
import { freshTrainerState, Trainer } from '../../src/engine/trainer.js';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint.js';
import { lowerTrainingGraph } from '../../src/model/lower-training.js';
import { microBatches } from '../../src/training/batches.js';
import { tempDir } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora } from '../oracle/checkpoints.js';
import { logSoftmax, oracleForward } from '../oracle/transformer.js';

/** A LoRA trainer continuing from the adapter in `loraDir`, as a job continuing from it would. */
function continueFrom(ckpt: Checkpoint, loraDir: string): Promise<Trainer> {
  const files = { config: fs.readFileSync(path.join(loraDir, 'adapter_config.json'), 'utf8'), weights: fs.readFileSync(path.join(loraDir, 'adapter_model.safetensors')) };
  const { options, params } = trainableKind('lora').fromDelta(files, ckpt.arch);
  return Trainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows: 1, seqLen: 16, kind: 'lora', options }, freshTrainerState(params));
}

/** The training graph's loss (forward only) against the independent plain-TypeScript oracle. */
describe('training graph on other families', () => {
  const TARGETS = { llama: ['q_proj', 'v_proj', 'up_proj', 'down_proj'], qwen2: ['q_proj', 'v_proj', 'up_proj', 'down_proj'], gpt2: ['c_attn', 'c_proj', 'c_fc'] };
  for (const [family, useRslora] of [['llama', false], ['qwen2', true], ['gpt2', false]] as const) {
    it(`${family}${useRslora ? ' (rsLoRA)' : ''}: the step graph's loss equals the oracle's cross-entropy with the same LoRA`, async () => {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const loraDir = tempDir();
      writeTinyLora(loraDir, family, { seed: 5, r: 4, alpha: 8, targetModules: TARGETS[family], useRslora, baseDir: modelDir });
      const ckpt = openCheckpoint(modelDir);
      const ids = Array.from({ length: 12 }, (_, i) => (i * 29 + 7) % ckpt.arch.vocabSize);
      const trainer = await continueFrom(ckpt, loraDir);
      try {
        const loss = await trainer.evaluate(microBatches([{ inputIds: ids, labels: ids }], 1, 16, 0).batches);
        const logits = oracleForward(readConfig(modelDir), loadWeightsF32(modelDir), ids, loadOracleLora(loraDir));
        let expected = 0;
        for (let t = 0; t + 1 < ids.length; t++) expected -= logSoftmax(logits[t]!)[ids[t + 1]!]!;
        expected /= ids.length - 1;
        assert.ok(Math.abs(loss - expected) <= 1e-4, `loss ${loss} vs oracle ${expected}`);
      } finally {
        await trainer.release();
      }
    });
  }

  it('gpt2: the step graph gradients agree with finite differences of its loss (LayerNorm, gelu, fused qkv, learned positions)', async () => {
    const modelDir = tempDir();
    writeTinyCheckpoint(modelDir, 'gpt2', { seed: 3 });
    const loraDir = tempDir();
    writeTinyLora(loraDir, 'gpt2', { seed: 5, r: 4, alpha: 8, targetModules: TARGETS.gpt2, baseDir: modelDir });
    const ckpt = openCheckpoint(modelDir);
    const ids = Array.from({ length: 10 }, (_, i) => (i * 13 + 3) % ckpt.arch.vocabSize);
    const { batches } = microBatches([{ inputIds: ids, labels: ids }], 1, 16, 0);
    const trainer = await continueFrom(ckpt, loraDir);
    try {
      // lr 0: the step only reports gradients; the parameters stay where they are.
      const { gradients } = await trainer.step(batches, { lr: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: Infinity });
      const params = trainer.snapshot().params;
      for (const name of ['transformer.h.0.attn.c_attn.lora_A.weight', 'transformer.h.1.mlp.c_fc.lora_B.weight', 'transformer.h.0.attn.c_proj.lora_B.weight']) {
        const values = params.get(name)!;
        for (const k of [0, 5]) {
          const x0 = values[k]!;
          const h = 1e-2;
          values[k] = x0 + h;
          const up = await trainer.evaluate(batches);
          values[k] = x0 - h;
          const down = await trainer.evaluate(batches);
          values[k] = x0;
          const numeric = (up - down) / (2 * h);
          const analytic = gradients.get(name)![k]!;
          assert.ok(Math.abs(analytic - numeric) <= 1e-4 + 0.01 * Math.abs(numeric), `${name}[${k}]: graph ${analytic}, finite difference ${numeric}`);
        }
      }
    } finally {
      await trainer.release();
    }
  });

  it('every family the engine serves has a training lowering (LoRA on every projection)', () => {
    for (const family of ['llama', 'qwen2', 'gpt2'] as const) {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const { arch } = openCheckpoint(modelDir);
      const lora = trainableKind('lora');
      const options = lora.resolve(arch, lora.options.parse({ r: 2 }), { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 });
      const graph = lowerTrainingGraph(openCheckpoint(modelDir), { weightFile: (f) => f, rows: 1, seqLen: 8, params: lora.params(arch, options), hooks: lora.hooks(arch, options) });
      assert.ok(graph.outputs.some((o) => o.name === 'new_param.' + lora.params(arch, options).at(-1)!.name), family);
    }
  });
});
