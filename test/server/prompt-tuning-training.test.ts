/**
 * Prompt tuning through the fine-tuning endpoint on the Llama fixture: a job initialised from the
 * tokenizer's embedding of init_text lowers the loss over 20 steps; its delta downloads as a PEFT
 * directory, which a restarted server given `--delta NAME=DIR` serves with the same logprobs
 * (≤ 1e-6) and which the oracle (PEFT's virtual tokens) agrees with; virtual tokens that fill the
 * context, and a row that does not fit after them, are 400s at job creation.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { oraclePromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { assertClose, CONTEXT, JobServer, jobRequests, oracleLogprobs, row, TASK_JSONL } from './virtual-token-jobs.js';

const job = jobRequests('prompt_tuning', 'prompted', 5e-2);

describe('prompt tuning through the fine-tuning endpoint', () => {
  const s = new JobServer();
  after(() => s.close());

  it('trains from init_text, lowers the loss, and round-trips: download, --delta on a restarted server, same logprobs', async () => {
    await s.start();
    const { dir, config, served } = await s.trainAndDownload(job(await s.uploadFile(TASK_JSONL), { num_virtual_tokens: 4, init: 'text', init_text: 'Continue the list' }));
    assert.deepEqual([config.peft_type, config.prompt_tuning_init, config.prompt_tuning_init_text, config.num_virtual_tokens, config.token_dim], ['PROMPT_TUNING', 'TEXT', 'Continue the list', 4, 64]);

    const restored = await s.restore(dir, served);
    // And what PEFT computes with the downloaded directory (the oracle's virtual tokens).
    assertClose(oracleLogprobs(() => oraclePromptTuning(dir)), restored, 1e-4, 'served');
  });

  it('virtual tokens that fill the context, or a row that no longer fits after them, are 400s naming the option or the line', async () => {
    const long = Array.from({ length: 58 }, (_, i) => (i * 7) % 500);
    const fileId = await s.uploadFile([TASK_JSONL, row(long)].join('\n'));
    assert.equal((await s.refusal(job(fileId, { num_virtual_tokens: CONTEXT }))).param, 'method.prompt_tuning.num_virtual_tokens');
    const rowTooLong = await s.refusal(job(fileId, { num_virtual_tokens: 8 }));
    assert.equal(rowTooLong.param, 'training_file');
    assert.match(rowTooLong.message, /line 3: the row has 58 tokens; after the 8 virtual tokens/);
    // The same file fits with fewer virtual tokens.
    assert.equal((await s.call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, { num_virtual_tokens: 6 }, { hyperparameters: { max_steps: 1, batch_size: 2 } }))).status, 201);
    for (const [options, param] of [[{ num_virtual_tokens: 4, init: 'text' }, 'method.prompt_tuning.init_text'], [{ num_virtual_tokens: 4, init_text: 'x' }, 'method.prompt_tuning.init_text'], [{ num_virtual_tokens: 4, prompt_tuning_init: 'TEXT' }, 'method.prompt_tuning']] as const) {
      const error = await s.refusal(job(fileId, options));
      assert.equal(error.param, param, JSON.stringify(error));
    }
  });
});
