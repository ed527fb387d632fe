/**
 * P-tuning through the fine-tuning endpoint on the Llama fixture: a job trained through PEFT's
 * MLP prompt encoder lowers the loss over 20 steps; its delta (the encoder's output, as PEFT
 * saves it) downloads as a PEFT directory, which a restarted server given `--delta NAME=DIR`
 * serves with the same logprobs (≤ 1e-6) and which the oracle agrees with; the LSTM encoder is a
 * 400 naming the option.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { logSoftmax } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { oraclePromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { oracleForward } from '../oracle/transformer.js';
import { assertClose, BASE_DIR, JobServer, PROBES, TASK_JSONL } from './virtual-token-jobs.js';

const job = (fileId: string, options: Record<string, unknown>) => ({
  model: 'tiny-llama',
  training_file: fileId,
  name: 'ptuned',
  method: { type: 'p_tuning', p_tuning: options },
  hyperparameters: { max_steps: 20, batch_size: 2, learning_rate: 1e-2, lr_scheduler: 'constant', max_grad_norm: null },
  seed: 7,
});

describe('P-tuning through the fine-tuning endpoint', () => {
  const s = new JobServer();
  after(() => s.close());

  it('trains through the MLP encoder, lowers the loss, and round-trips: download, --delta on a restarted server, same logprobs', async () => {
    await s.start();
    const fileId = await s.uploadFile(TASK_JSONL);
    const lstm = await s.call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, { num_virtual_tokens: 4, encoder_reparameterization_type: 'LSTM' }));
    assert.equal(lstm.status, 400, JSON.stringify(lstm.json));
    assert.equal(lstm.json.error.param, 'method.p_tuning.encoder_reparameterization_type');

    const { job: done, losses } = await s.train(job(fileId, { num_virtual_tokens: 4, encoder_hidden_size: 32 }));
    console.log('train loss: step 1', losses[0], 'step 20', losses[19]);
    assert.equal(losses.length, 20);
    assert.ok(losses[19]! < losses[0]! - 0.1, `loss fell from ${losses[0]} to ${losses[19]}`);
    const dir = await s.download(done.fine_tuned_model);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([config.peft_type, config.encoder_reparameterization_type, config.encoder_hidden_size, config.num_virtual_tokens], ['P_TUNING', 'MLP', 32, 4]);
    const served = await Promise.all(PROBES.map((p) => s.logprobs(done.fine_tuned_model, p)));

    await s.close();
    await s.start({ delta: [`restored=${dir}`] });
    const restored = await Promise.all(PROBES.map((p) => s.logprobs('restored', p)));
    assertClose(served, restored, 1e-6, 'restored');

    const model = readConfig(BASE_DIR);
    const weights = loadWeightsF32(BASE_DIR);
    const oracle = PROBES.map((ids) => oracleForward(model, weights, ids, undefined, [oraclePromptTuning(dir)]).slice(0, -1).map((logits, t) => logSoftmax(logits)[ids[t + 1]!]!));
    assertClose(oracle, restored, 1e-4, 'served');
  });
});
