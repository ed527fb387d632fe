/**
 * Prefix tuning through the fine-tuning endpoint on the Llama fixture (grouped key/value heads):
 * a job trained through prefix_projection lowers the loss over 20 steps; its delta (the projected
 * prefix, as PEFT saves it) downloads as a PEFT directory, which a restarted server given
 * `--delta NAME=DIR` serves with the same logprobs (≤ 1e-6) and which the oracle (PEFT's
 * get_prompt) agrees with; a prefix that fills the context, and a row that does not fit after
 * it, are 400s at job creation; a job continues from the trained prefix.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { loadOraclePrefix } from '../oracle/kinds/prefix-tuning.js';
import { assertClose, CONTEXT, JobServer, jobRequests, oracleLogprobs, row, TASK_JSONL } from './virtual-token-jobs.js';

const job = jobRequests('prefix_tuning', 'prefixed', 1e-2);

describe('prefix tuning through the fine-tuning endpoint', () => {
  const s = new JobServer();
  after(() => s.close());

  it('trains through the projection, lowers the loss, and round-trips: download, --delta on a restarted server, same logprobs', async () => {
    await s.start();
    const fileId = await s.uploadFile(TASK_JSONL);
    const { job: done, dir, config, served } = await s.trainAndDownload(job(fileId, { num_virtual_tokens: 4, prefix_projection: true, encoder_hidden_size: 16 }));
    assert.deepEqual([config.peft_type, config.prefix_projection, config.encoder_hidden_size, config.num_virtual_tokens, config.token_dim, config.num_attention_heads], ['PREFIX_TUNING', true, 16, 4, 32, 2]);

    // Continuing from the trained prefix starts from its weights: one step at a tiny learning rate stays next to it.
    const { job: continued } = await s.train(job(fileId, { num_virtual_tokens: 4 }, { model: done.fine_tuned_model, name: 'continued', hyperparameters: { max_steps: 1, batch_size: 2, learning_rate: 1e-7 } }));
    assertClose(served, await s.probeLogprobs(continued.fine_tuned_model), 1e-4, 'continued');

    const restored = await s.restore(dir, served);
    // And what PEFT computes with the downloaded directory (get_prompt's keys and values in the cache).
    assertClose(oracleLogprobs((model) => loadOraclePrefix(dir, model)), restored, 1e-4, 'served');
  });

  it('a prefix that fills the context, or a row that no longer fits after it, is a 400 naming the option or the line', async () => {
    const long = Array.from({ length: 58 }, (_, i) => (i * 7) % 500);
    const fileId = await s.uploadFile([TASK_JSONL, row(long)].join('\n'));
    assert.equal((await s.refusal(job(fileId, { num_virtual_tokens: CONTEXT }))).param, 'method.prefix_tuning.num_virtual_tokens');
    const rowTooLong = await s.refusal(job(fileId, { num_virtual_tokens: 8 }));
    assert.equal(rowTooLong.param, 'training_file');
    assert.match(rowTooLong.message, /line 3: the row has 58 tokens; after the 8 virtual tokens/);
    for (const [options, param] of [[{ num_virtual_tokens: 4, encoder_hidden_size: 8 }, 'method.prefix_tuning.encoder_hidden_size'], [{ num_virtual_tokens: 4, token_dim: 8 }, 'method.prefix_tuning']] as const) {
      const error = await s.refusal(job(fileId, options));
      assert.equal(error.param, param, JSON.stringify(error));
    }
  });
});
