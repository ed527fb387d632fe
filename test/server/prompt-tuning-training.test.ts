/**
 * Prompt tuning through the fine-tuning endpoint on the Llama fixture: a job initialised from the
 * tokenizer's embedding of init_text lowers the loss over 20 steps; its delta downloads as a PEFT
 * directory, which a restarted server given `--delta NAME=DIR` serves with the same logprobs
 * (≤ 1e-6) and which the oracle (PEFT's virtual tokens) agrees with; virtual tokens that fill the
 * context, and a row that does not fit after them, are 400s at job creation.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { logSoftmax } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { oraclePromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { oracleForward } from '../oracle/transformer.js';
import { assertClose, BASE_DIR, CONTEXT, JobServer, PROBES, row, TASK_JSONL } from './virtual-token-jobs.js';

const job = (fileId: string, options: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  model: 'tiny-llama',
  training_file: fileId,
  name: 'prompted',
  method: { type: 'prompt_tuning', prompt_tuning: options },
  hyperparameters: { max_steps: 20, batch_size: 2, learning_rate: 5e-2, lr_scheduler: 'constant', max_grad_norm: null },
  seed: 7,
  ...extra,
});

describe('prompt tuning through the fine-tuning endpoint', () => {
  const s = new JobServer();
  after(() => s.close());

  it('trains from init_text, lowers the loss, and round-trips: download, --delta on a restarted server, same logprobs', async () => {
    await s.start();
    const { job: done, losses } = await s.train(job(await s.uploadFile(TASK_JSONL), { num_virtual_tokens: 4, init: 'text', init_text: 'Continue the list' }));
    console.log('train loss: step 1', losses[0], 'step 20', losses[19]);
    assert.equal(losses.length, 20);
    assert.ok(losses[19]! < losses[0]! - 0.1, `loss fell from ${losses[0]} to ${losses[19]}`);
    const dir = await s.download(done.fine_tuned_model);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([config.peft_type, config.prompt_tuning_init, config.prompt_tuning_init_text, config.num_virtual_tokens, config.token_dim], ['PROMPT_TUNING', 'TEXT', 'Continue the list', 4, 64]);
    const served = await Promise.all(PROBES.map((p) => s.logprobs(done.fine_tuned_model, p)));

    await s.close();
    await s.start({ delta: [`restored=${dir}`] });
    const restored = await Promise.all(PROBES.map((p) => s.logprobs('restored', p)));
    assertClose(served, restored, 1e-6, 'restored');

    // And what PEFT computes with the downloaded directory (the oracle's virtual tokens).
    const model = readConfig(BASE_DIR);
    const weights = loadWeightsF32(BASE_DIR);
    const oracle = PROBES.map((ids) => oracleForward(model, weights, ids, undefined, [oraclePromptTuning(dir)]).slice(0, -1).map((logits, t) => logSoftmax(logits)[ids[t + 1]!]!));
    assertClose(oracle, restored, 1e-4, 'served');
  });

  it('virtual tokens that fill the context, or a row that no longer fits after them, are 400s naming the option or the line', async () => {
    const long = Array.from({ length: 58 }, (_, i) => (i * 7) % 500);
    const fileId = await s.uploadFile([TASK_JSONL, row(long)].join('\n'));
    const full = await s.call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, { num_virtual_tokens: CONTEXT }));
    assert.equal(full.status, 400, JSON.stringify(full.json));
    assert.equal(full.json.error.param, 'method.prompt_tuning.num_virtual_tokens');
    const rowTooLong = await s.call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, { num_virtual_tokens: 8 }));
    assert.equal(rowTooLong.status, 400, JSON.stringify(rowTooLong.json));
    assert.equal(rowTooLong.json.error.param, 'training_file');
    assert.match(rowTooLong.json.error.message, /line 3: the row has 58 tokens; after the 8 virtual tokens/);
    // The same file fits with fewer virtual tokens.
    assert.equal((await s.call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, { num_virtual_tokens: 6 }, { hyperparameters: { max_steps: 1, batch_size: 2 } }))).status, 201);
    for (const [options, param] of [[{ num_virtual_tokens: 4, init: 'text' }, 'method.prompt_tuning.init_text'], [{ num_virtual_tokens: 4, init_text: 'x' }, 'method.prompt_tuning.init_text'], [{ num_virtual_tokens: 4, prompt_tuning_init: 'TEXT' }, 'method.prompt_tuning']] as const) {
      const res = await s.call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, options));
      assert.equal(res.status, 400, JSON.stringify(res.json));
      assert.equal(res.json.error.param, param, JSON.stringify(res.json));
    }
  });
});
