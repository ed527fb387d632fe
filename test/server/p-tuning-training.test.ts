/**
 * P-tuning through the fine-tuning endpoint on the Llama fixture: a job trained through PEFT's
 * MLP prompt encoder lowers the loss over 20 steps; its delta (the encoder's output, as PEFT
 * saves it) downloads as a PEFT directory, which a restarted server given `--delta NAME=DIR`
 * serves with the same logprobs (≤ 1e-6) and which the oracle agrees with; the LSTM encoder is a
 * 400 naming the option.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { oraclePromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { assertClose, JobServer, jobRequests, oracleLogprobs, TASK_JSONL } from './virtual-token-jobs.js';

const job = jobRequests('p_tuning', 'ptuned', 1e-2);

describe('P-tuning through the fine-tuning endpoint', () => {
  const s = new JobServer();
  after(() => s.close());

  it('trains through the MLP encoder, lowers the loss, and round-trips: download, --delta on a restarted server, same logprobs', async () => {
    await s.start();
    const fileId = await s.uploadFile(TASK_JSONL);
    const lstm = await s.refusal(job(fileId, { num_virtual_tokens: 4, encoder_reparameterization_type: 'LSTM' }));
    assert.equal(lstm.param, 'method.p_tuning.encoder_reparameterization_type');

    const { dir, config, served } = await s.trainAndDownload(job(fileId, { num_virtual_tokens: 4, encoder_hidden_size: 32 }));
    assert.deepEqual([config.peft_type, config.encoder_reparameterization_type, config.encoder_hidden_size, config.num_virtual_tokens], ['P_TUNING', 'MLP', 32, 4]);

    const restored = await s.restore(dir, served);
    assertClose(oracleLogprobs(() => oraclePromptTuning(dir)), restored, 1e-4, 'served');
  });
});
