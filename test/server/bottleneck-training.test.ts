/**
 * Bottleneck adapter fine-tuning through the admin API on the PEFT fixture backbone: a job trains
 * an adapter, the result is the adapters library's layout, and its downloaded files (the weights
 * saved as the library's adapter.safetensors), given to a restarted server with --delta NAME=DIR,
 * serve the same logprobs as the job's result did (≤ 1e-6). Bad options are 400s naming the field.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FIXTURE, tempDir } from '../helpers.js';
import { JobServer } from './virtual-token-jobs.js';
import { writeTinyBottleneck } from '../oracle/kinds/bottleneck-checkpoint.js';

const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const JSONL = TASK.map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] })).join('\n');
const PROBE = [...TASK[0]!.prompt, ...TASK[0]!.target, 5, 6, 7];

describe('bottleneck fine-tuning through the admin API', () => {
  const jobs = new JobServer();
  const options = { maxRank: 8, maxBottleneck: 16 };
  before(() => jobs.start(options));
  after(() => jobs.close());
  const call = (method: string, route: string, body?: unknown) => jobs.call(method, route, body);
  const uploadFile = () => jobs.uploadFile(JSONL);
  const logprobs = (model: string) => jobs.logprobs(model, PROBE);
  const jobRequest = (file: string, bottleneck: Record<string, unknown>, name = 'bn-job') => ({
    model: 'tiny-llama',
    training_file: file,
    name,
    method: { type: 'bottleneck', bottleneck },
    hyperparameters: { max_steps: 12, batch_size: 2, learning_rate: 3e-2, lr_scheduler: 'constant' },
    seed: 7,
  });

  it("a bottleneck job publishes the adapters library's files, which serve the same logprobs after a restart with --delta", async () => {
    const file = await uploadFile();
    const { job, losses } = await jobs.train(jobRequest(file, { placement: 'both', non_linearity: 'gelu', reduction_factor: 8 }));
    assert.equal(losses.length, 12);
    assert.ok(losses[11]! < losses[0]! - 0.5, `loss ${losses[0]} → ${losses[11]}`);

    const served = await logprobs(job.fine_tuned_model);
    const base = await logprobs('tiny-llama');
    assert.ok(served.some((v, i) => Math.abs(v - base[i]!) > 1e-3), 'the trained adapter must change the model');

    // The files route names every delta's weights adapter_model.safetensors; the library's own name is adapter.safetensors.
    const dir = await jobs.download('bn-job');
    fs.renameSync(path.join(dir, 'adapter_model.safetensors'), path.join(dir, 'adapter.safetensors'));
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(config.peft_type, undefined);
    assert.equal(config.config.mh_adapter, true);
    assert.equal(config.config.output_adapter, true);
    assert.equal(config.config.non_linearity, 'gelu');

    await jobs.close();
    await jobs.start({ ...options, delta: [`restored=${dir}`] });
    const restored = await logprobs('restored');
    const worst = Math.max(...restored.map((v, i) => Math.abs(v - served[i]!)));
    assert.ok(worst <= 1e-6, `restored logprobs differ from the job's served result by ${worst}`);
    console.log('round trip: max |Δ logprob|', worst);
  });

  it('bad bottleneck options are 400s naming the field, at job creation', async () => {
    const file = await uploadFile();
    const cases: [Record<string, unknown>, string, RegExp?][] = [
      [{ non_linearity: 'mish' }, 'method.bottleneck.non_linearity', /'mish' is not one of/],
      [{ reduction_factor: 2 }, 'method.bottleneck.reduction_factor', /64 \/\/ 2 = 32 wide, more than the server's max bottleneck 16/],
      [{ placement: 'cross' }, 'method.bottleneck.placement'],
      [{ scaling: 'learned' }, 'method.bottleneck', /scaling/],
    ];
    for (const [options, param, message] of cases) {
      const res = await call('POST', '/admin/v1/fine_tuning/jobs', jobRequest(file, options, 'refused'));
      assert.equal(res.status, 400, `${JSON.stringify(options)}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.error.param, param, JSON.stringify(res.json));
      if (message) assert.match(res.json.error.message, message);
    }
  });

  it('continuing from an adapter the method cannot start from (a parallel one) is a 400 naming model, at job creation', async () => {
    const dir = tempDir();
    writeTinyBottleneck(dir, { baseDir: path.join(FIXTURE, 'base'), preset: 'par_bn', config: { reduction_factor: 8 } });
    const form = new FormData();
    form.set('name', 'parallel');
    form.set('adapter_config', new Blob([fs.readFileSync(path.join(dir, 'adapter_config.json'))]), 'adapter_config.json');
    form.set('adapter_model', new Blob([fs.readFileSync(path.join(dir, 'adapter.safetensors'))]), 'adapter_model.safetensors');
    const uploaded = await call('POST', '/v1/deltas', form);
    assert.equal(uploaded.status, 201, JSON.stringify(uploaded.json));
    const file = await uploadFile();
    const jobsBefore = (await call('GET', '/admin/v1/fine_tuning/jobs')).json.data.length;
    const res = await call('POST', '/admin/v1/fine_tuning/jobs', { ...jobRequest(file, {}, 'continued'), model: 'parallel' });
    assert.equal(res.status, 400, JSON.stringify(res.json));
    assert.equal(res.json.error.param, 'model');
    assert.match(res.json.error.message, /cannot be continued by method\.type 'bottleneck'.*is_parallel/);
    assert.equal((await call('GET', '/admin/v1/fine_tuning/jobs')).json.data.length, jobsBefore, 'no job was created');
  });
});
