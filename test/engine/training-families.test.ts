import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loraWeightsFromPeft } from '../../src/deltas/peft-lora-write.js';
import { LoraTrainer } from '../../src/engine/lora-trainer.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { trainingUnsupported } from '../../src/model/lower-training.js';
import { microBatches } from '../../src/training/batches.js';
import { loraStateFromWeights } from '../../src/training/lora-init.js';
import { tempDir } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora } from '../oracle/checkpoints.js';
import { logSoftmax, oracleForward } from '../oracle/transformer.js';

/** The training graph's loss (forward only) against the independent plain-TypeScript oracle. */
describe('training graph on other families', () => {
  for (const [family, useRslora] of [['llama', false], ['qwen2', true]] as const) {
    it(`${family}${useRslora ? ' (rsLoRA)' : ''}: the step graph's loss equals the oracle's cross-entropy with the same LoRA`, async () => {
      const modelDir = tempDir();
      writeTinyCheckpoint(modelDir, family, { seed: 3 });
      const loraDir = tempDir();
      writeTinyLora(loraDir, family, { seed: 5, r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'up_proj', 'down_proj'], useRslora, baseDir: modelDir });
      const ckpt = openCheckpoint(modelDir);
      const weights = loraWeightsFromPeft(fs.readFileSync(path.join(loraDir, 'adapter_config.json'), 'utf8'), fs.readFileSync(path.join(loraDir, 'adapter_model.safetensors')), ckpt.arch);
      const lora = { rank: weights.r, alpha: weights.alpha, useRslora: weights.useRslora, modules: [...weights.modules.keys()] };
      const ids = Array.from({ length: 12 }, (_, i) => (i * 29 + 7) % ckpt.arch.vocabSize);
      const trainer = await LoraTrainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows: 1, seqLen: 16, lora }, loraStateFromWeights(weights));
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

  it('GPT-2 is refused with a reason (its lowering to primitive ops is not written yet)', () => {
    const modelDir = tempDir();
    writeTinyCheckpoint(modelDir, 'gpt2', { seed: 3 });
    assert.match(trainingUnsupported(openCheckpoint(modelDir).arch) ?? '', /Llama-family/);
  });
});
