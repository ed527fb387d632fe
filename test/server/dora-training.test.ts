/**
 * DoRA fine-tuning through the admin API on the PEFT fixture backbone: a job trains a DoRA, the
 * result is a PEFT use_dora adapter, and its downloaded files, given to a restarted server with
 * --delta NAME=DIR, serve the same logprobs as the job's result did (≤ 1e-6). Bad DoRA options
 * are 400s naming the field.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { JobServer } from './virtual-token-jobs.js';

const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const JSONL = TASK.map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] })).join('\n');
const PROBE = [...TASK[0]!.prompt, ...TASK[0]!.target, 5, 6, 7];

describe('DoRA fine-tuning through the admin API', () => {
  const jobs = new JobServer();
  before(() => jobs.start({ maxRank: 8 }));
  after(() => jobs.close());

  const jobRequest = (file: string, dora: Record<string, unknown>, name = 'dora-job') => ({
    model: 'tiny-llama',
    training_file: file,
    name,
    method: { type: 'dora', dora },
    hyperparameters: { max_steps: 12, batch_size: 2, learning_rate: 1e-2, lr_scheduler: 'constant' },
    seed: 7,
  });

  it('a DoRA job publishes a PEFT use_dora adapter that serves the same logprobs after a restart with --delta', async () => {
    const file = await jobs.uploadFile(JSONL);
    const { job, losses } = await jobs.train(jobRequest(file, { r: 4, alpha: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'] }));
    assert.equal(losses.length, 12);
    assert.ok(losses[11]! < losses[0]! - 0.5, `loss ${losses[0]} → ${losses[11]}`);

    const served = await jobs.logprobs(job.fine_tuned_model, PROBE);
    const base = await jobs.logprobs('tiny-llama', PROBE);
    assert.ok(served.some((v, i) => Math.abs(v - base[i]!) > 1e-3), 'the trained DoRA must change the model');

    const dir = await jobs.download('dora-job');
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.use_dora, true);
    assert.deepEqual(config.target_modules, ['down_proj', 'q_proj', 'v_proj']);

    await jobs.close();
    await jobs.start({ maxRank: 8, delta: [`restored=${dir}`] });
    const restored = await jobs.logprobs('restored', PROBE);
    const worst = Math.max(...restored.map((v, i) => Math.abs(v - served[i]!)));
    assert.ok(worst <= 1e-6, `restored logprobs differ from the job's served result by ${worst}`);
    console.log('round trip: max |Δ logprob|', worst);
  });

  it('bad DoRA options are 400s naming the field, at job creation', async () => {
    const file = await jobs.uploadFile(JSONL);
    const cases: [Record<string, unknown>, string, RegExp?][] = [
      [{ r: 64 }, 'method.dora.r'],
      [{ target_modules: ['q_proj', 'c_attn'] }, 'method.dora.target_modules', /c_attn not in the backbone/],
      [{ r: 4, lora_dropout: 0.1 }, 'method.dora', /lora_dropout/],
      [{ use_dora: false }, 'method.dora', /use_dora/],
    ];
    for (const [options, param, message] of cases) {
      const res = await jobs.call('POST', '/admin/v1/fine_tuning/jobs', jobRequest(file, options, 'refused'));
      assert.equal(res.status, 400, `${JSON.stringify(options)}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.error.param, param, JSON.stringify(res.json));
      if (message) assert.match(res.json.error.message, message);
    }
  });
});
