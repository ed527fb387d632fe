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
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const JSONL = TASK.map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] })).join('\n');
const PROBE = [...TASK[0]!.prompt, ...TASK[0]!.target, 5, 6, 7];

describe('DoRA fine-tuning through the admin API', () => {
  let server: RunningServer;
  const dataDir = tempDir();
  const cacheDir = tempDir();
  const start = async (delta: string[] = []) => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir, dataDir, model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, delta }));
    await server.ready;
  };
  before(() => start());
  after(() => server.close());

  const call = async (method: string, route: string, body?: unknown) => {
    const init: RequestInit = { method };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) Object.assign(init, { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const res = await fetch(`${server.url}${route}`, init);
    return { status: res.status, json: (await res.json()) as Json };
  };
  const uploadFile = async () => {
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob([JSONL]), 'task.jsonl');
    const res = await call('POST', '/admin/v1/files', form);
    assert.equal(res.status, 201, JSON.stringify(res.json));
    return res.json.id as string;
  };
  const logprobs = async (model: string) => {
    const res = await call('POST', '/v1/completions', { model, prompt: PROBE, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.choices[0].logprobs.token_logprobs.slice(1) as number[];
  };
  const jobRequest = (file: string, dora: Record<string, unknown>, name = 'dora-job') => ({
    model: 'tiny-llama',
    training_file: file,
    name,
    method: { type: 'dora', dora },
    hyperparameters: { max_steps: 12, batch_size: 2, learning_rate: 1e-2, lr_scheduler: 'constant' },
    seed: 7,
  });

  it('a DoRA job publishes a PEFT use_dora adapter that serves the same logprobs after a restart with --delta', async () => {
    const file = await uploadFile();
    const created = await call('POST', '/admin/v1/fine_tuning/jobs', jobRequest(file, { r: 4, alpha: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'] }));
    assert.equal(created.status, 201, JSON.stringify(created.json));
    let job: Json;
    for (;;) {
      job = (await call('GET', `/admin/v1/fine_tuning/jobs/${created.json.id}`)).json;
      if (job.status === 'succeeded' || job.status === 'failed') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const events = (await call('GET', `/admin/v1/fine_tuning/jobs/${job.id}/events?limit=100`)).json.data;
    const losses = events.filter((e: Json) => e.type === 'metrics' && 'train_loss' in e.data).reverse().map((e: Json) => e.data.train_loss as number);
    assert.equal(losses.length, 12);
    assert.ok(losses[11]! < losses[0]! - 0.5, `loss ${losses[0]} → ${losses[11]}`);

    const served = await logprobs(job.fine_tuned_model);
    const base = await logprobs('tiny-llama');
    assert.ok(served.some((v, i) => Math.abs(v - base[i]!) > 1e-3), 'the trained DoRA must change the model');

    const dir = tempDir();
    for (const name of ['adapter_config.json', 'adapter_model.safetensors']) {
      const res = await fetch(`${server.url}/v1/deltas/dora-job/files/${name}`);
      assert.equal(res.status, 200, name);
      fs.writeFileSync(path.join(dir, name), Buffer.from(await res.arrayBuffer()));
    }
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.use_dora, true);
    assert.deepEqual(config.target_modules, ['down_proj', 'q_proj', 'v_proj']);

    await server.close();
    await start([`restored=${dir}`]);
    const restored = await logprobs('restored');
    const worst = Math.max(...restored.map((v, i) => Math.abs(v - served[i]!)));
    assert.ok(worst <= 1e-6, `restored logprobs differ from the job's served result by ${worst}`);
    console.log('round trip: max |Δ logprob|', worst);
  });

  it('bad DoRA options are 400s naming the field, at job creation', async () => {
    const file = await uploadFile();
    const cases: [Record<string, unknown>, string, RegExp?][] = [
      [{ r: 64 }, 'method.dora.r'],
      [{ target_modules: ['q_proj', 'c_attn'] }, 'method.dora.target_modules', /c_attn not in the backbone/],
      [{ r: 4, lora_dropout: 0.1 }, 'method.dora', /lora_dropout/],
      [{ use_dora: false }, 'method.dora', /use_dora/],
    ];
    for (const [options, param, message] of cases) {
      const res = await call('POST', '/admin/v1/fine_tuning/jobs', jobRequest(file, options, 'refused'));
      assert.equal(res.status, 400, `${JSON.stringify(options)}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.error.param, param, JSON.stringify(res.json));
      if (message) assert.match(res.json.error.message, message);
    }
  });
});
