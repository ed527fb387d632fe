import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, tempDir } from '../helpers.js';
import { writeTinyIa3 } from '../oracle/kinds/ia3.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');

/** The task: after prompt P_i, continue with target T_i (token ids the base model does not produce). */
const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const JSONL = TASK.map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] })).join('\n');

describe('fine-tuning through the admin API', () => {
  let server: RunningServer;
  const dataDir = tempDir();
  const cacheDir = tempDir();
  const start = async (extra: Record<string, unknown> = {}) => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir, dataDir, model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, ...extra }));
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
  const uploadFile = (text: string, purpose = 'fine-tune') => {
    const form = new FormData();
    form.set('purpose', purpose);
    form.set('file', new Blob([text]), 'task.jsonl');
    return call('POST', '/admin/v1/files', form);
  };
  const greedy = async (model: string, prompt: number[], tokens = 6) => {
    const res = await call('POST', '/v1/completions', { model, prompt, max_tokens: tokens, temperature: 0, return_token_ids: true });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.choices[0].token_ids as number[];
  };
  const waitFor = async (id: string, done: (job: Json) => boolean) => {
    for (;;) {
      const { json } = await call('GET', `/admin/v1/fine_tuning/jobs/${id}`);
      if (done(json)) return json;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const jobRequest = (fileId: string, extra: Record<string, unknown> = {}) => ({
    model: 'tiny-llama',
    training_file: fileId,
    name: 'memorized',
    method: { type: 'lora', lora: { r: 8, alpha: 16, target_modules: 'all-linear' } },
    hyperparameters: { max_steps: 40, batch_size: 2, learning_rate: 1e-2, lr_scheduler: 'constant', max_grad_norm: null },
    seed: 7,
    ...extra,
  });

  it('a trained delta produces the taught continuations, while the base and other deltas are unchanged', async () => {
    const other = new FormData();
    other.set('name', 'other');
    other.set('adapter_config', new Blob([fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'))]), 'adapter_config.json');
    other.set('adapter_model', new Blob([fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'))]), 'adapter_model.safetensors');
    assert.equal((await call('POST', '/v1/deltas', other)).status, 201);
    const baseBefore = await Promise.all(TASK.map((t) => greedy('tiny-llama', t.prompt)));
    TASK.forEach((t, i) => assert.notDeepEqual(baseBefore[i], t.target, 'the base model must not already know the task'));

    const file = await uploadFile(JSONL);
    assert.equal(file.status, 201, JSON.stringify(file.json));
    assert.equal(file.json.rows, 2);
    const created = await call('POST', '/admin/v1/fine_tuning/jobs', jobRequest(file.json.id, { validation_file: file.json.id }));
    assert.equal(created.status, 201, JSON.stringify(created.json));
    assert.equal(created.json.object, 'fine_tuning.job');
    const job = await waitFor(created.json.id, (j) => j.status === 'succeeded' || j.status === 'failed');
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.fine_tuned_model, 'default/memorized@1');
    assert.equal(job.step, 40);
    assert.ok(job.trained_tokens > 0 && job.tokens_per_second > 0);
    // Validating on the training rows themselves: the final validation loss is the trained loss.
    assert.ok(job.valid_loss < job.loss + 0.5, `valid_loss ${job.valid_loss}, last train loss ${job.loss}`);

    const events = (await call('GET', `/admin/v1/fine_tuning/jobs/${job.id}/events?limit=100`)).json;
    const metrics = events.data.filter((e: Json) => e.type === 'metrics' && 'train_loss' in e.data).reverse();
    assert.ok(events.data.some((e: Json) => e.type === 'metrics' && e.data.valid_loss === job.valid_loss));
    assert.equal(metrics.length, 40);
    assert.deepEqual(Object.keys(metrics[0].data).slice(0, 2), ['step', 'train_loss']);
    // The random tiny model's logits are small (weights ~0.02), so the loss cannot go far below ln(512) - 1.5;
    // what matters is that it falls and that the argmax becomes the taught token.
    assert.ok(metrics[39].data.train_loss < metrics[0].data.train_loss - 1, `loss fell from ${metrics[0].data.train_loss} to ${metrics[39].data.train_loss}`);

    for (const t of TASK) assert.deepEqual(await greedy(job.fine_tuned_model, t.prompt), t.target);
    assert.deepEqual(await greedy('memorized', TASK[0]!.prompt), TASK[0]!.target);
    assert.deepEqual(await Promise.all(TASK.map((t) => greedy('tiny-llama', t.prompt))), baseBefore);
    assert.deepEqual(await greedy('other', ref.input_ids[0]!, 12), ref.lora_all_r8.greedy_12[0]);

    // The stored delta is a PEFT directory (downloadable like any upload).
    const config = JSON.parse(await (await fetch(`${server.url}/v1/deltas/memorized/files/adapter_config.json`)).text());
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.r, 8);
  });

  it('SSE events stream until the job ends; cancel stops a job and stores nothing', async () => {
    const file = await uploadFile(JSONL);
    const created = await call('POST', '/admin/v1/fine_tuning/jobs', jobRequest(file.json.id, { name: 'cancelled', hyperparameters: { max_steps: 100000, batch_size: 2 } }));
    const stream = await fetch(`${server.url}/admin/v1/fine_tuning/jobs/${created.json.id}/events?stream=true`);
    assert.match(stream.headers.get('content-type') ?? '', /text\/event-stream/);
    await waitFor(created.json.id, (j) => j.step >= 2);
    // One job trains at a time: a second one waits its turn, and cancelling it while queued is immediate.
    const second = await call('POST', '/admin/v1/fine_tuning/jobs', jobRequest(file.json.id, { name: 'second' }));
    assert.equal(second.json.status, 'queued');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal((await call('GET', `/admin/v1/fine_tuning/jobs/${second.json.id}`)).json.status, 'queued');
    assert.equal((await call('POST', `/admin/v1/fine_tuning/jobs/${second.json.id}/cancel`)).json.status, 'cancelled');
    assert.equal((await call('POST', `/admin/v1/fine_tuning/jobs/${created.json.id}/cancel`)).status, 200);
    const text = await stream.text();
    const lines = text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
    assert.equal(lines.at(-1), '[DONE]');
    assert.ok(lines.slice(0, -1).some((l) => JSON.parse(l).type === 'metrics'));
    const job = await waitFor(created.json.id, (j) => j.status === 'cancelled');
    assert.equal(job.fine_tuned_model, null);
    assert.equal((await call('GET', '/v1/deltas/cancelled')).status, 404);
    assert.equal((await call('POST', `/admin/v1/fine_tuning/jobs/${created.json.id}/cancel`)).status, 409);
  });

  it('bad files and bad job requests are 400s naming the field, and store nothing', async () => {
    const before = (await call('GET', '/admin/v1/files')).json.data.length;
    const badLine = await uploadFile(`${JSON.stringify({ prompt: 'a', completion: 'b' })}\n{"prompt": 3}`);
    assert.equal(badLine.status, 400);
    assert.equal(badLine.json.error.param, 'file');
    assert.match(badLine.json.error.message, /line 2/);
    assert.equal((await uploadFile('{not json')).status, 400);
    const purpose = await uploadFile(JSONL, 'assistants');
    assert.equal(purpose.status, 400);
    assert.equal(purpose.json.error.param, 'purpose');
    assert.equal((await call('GET', '/admin/v1/files')).json.data.length, before);

    const file = (await uploadFile(JSONL)).json.id;
    const jobsBefore = (await call('GET', '/admin/v1/fine_tuning/jobs?limit=100')).json.data.length;
    const ia3 = tempDir();
    writeTinyIa3(ia3, { baseDir: path.join(FIXTURE, 'base'), seed: 3 });
    const upload = new FormData();
    upload.set('name', 'scaled');
    upload.set('adapter_config', new Blob([fs.readFileSync(path.join(ia3, 'adapter_config.json'))]), 'adapter_config.json');
    upload.set('adapter_model', new Blob([fs.readFileSync(path.join(ia3, 'adapter_model.safetensors'))]), 'adapter_model.safetensors');
    assert.equal((await call('POST', '/v1/deltas', upload)).status, 201);
    const cases: [Record<string, unknown>, string, RegExp?][] = [
      [{ training_file: 'file-000000000000000000000000' }, 'training_file'],
      [{ model: 'no-such-model' }, 'model'],
      [{ model: 'scaled' }, 'model', /'scaled' is a ia3 delta; a lora job continues only from a lora delta/],
      [{ method: { type: 'full_finetune' } }, 'method.type', /Expected 'lora'/],
      [{ method: { type: 'lora', lora: { r: 4, lora_dropout: 0.1 } } }, 'method.lora', /lora_dropout/],
      [{ method: { type: 'lora', ia3: {} } }, 'method', /ia3/],
      [{ method: { type: 'lora', lora: { r: 64 } } }, 'method.lora.r'],
      [{ method: { type: 'lora', lora: { target_modules: ['q_proj', 'attn_out'] } } }, 'method.lora.target_modules', /attn_out not in the backbone/],
      [{ hyperparameters: { learning_rate: -1 } }, 'hyperparameters.learning_rate'],
      [{ hyperparameters: { lr_scheduler: 'exponential' } }, 'hyperparameters.lr_scheduler'],
      [{ name: '../escape' }, 'name'],
      [{ unknown_field: 1 }, 'body'],
    ];
    for (const [patch, param, message] of cases) {
      const res = await call('POST', '/admin/v1/fine_tuning/jobs', { ...jobRequest(file), ...patch });
      assert.equal(res.status, patch['model'] === 'no-such-model' ? 404 : 400, `${JSON.stringify(patch)}: ${JSON.stringify(res.json)}`);
      if (param !== 'body') assert.equal(res.json.error.param, param, JSON.stringify(res.json));
      if (message) assert.match(res.json.error.message, message);
    }
    assert.equal((await call('GET', '/admin/v1/fine_tuning/jobs?limit=100')).json.data.length, jobsBefore);
    assert.equal((await call('GET', '/admin/v1/fine_tuning/jobs/ftjob-nope')).status, 404);
  });

  it('a job continues from an existing delta, and a restarted server resumes an interrupted job to the same weights', async () => {
    const file = (await uploadFile(JSONL)).json.id;
    const request = (name: string) => jobRequest(file, { model: 'memorized', name, hyperparameters: { max_steps: 30, batch_size: 2, learning_rate: 1e-3 } });
    const straight = await call('POST', '/admin/v1/fine_tuning/jobs', request('straight'));
    const done = await waitFor(straight.json.id, (j) => j.status === 'succeeded' || j.status === 'failed');
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(JSON.parse(await (await fetch(`${server.url}/v1/deltas/straight/files/adapter_config.json`)).text()).base_model_name_or_path, 'default/memorized@1');

    const interrupted = await call('POST', '/admin/v1/fine_tuning/jobs', request('resumed'));
    await waitFor(interrupted.json.id, (j) => j.step >= 7);
    await server.close();
    await start();
    const resumed = await waitFor(interrupted.json.id, (j) => j.status === 'succeeded' || j.status === 'failed');
    assert.equal(resumed.status, 'succeeded', JSON.stringify(resumed.error));
    const messages = (await call('GET', `/admin/v1/fine_tuning/jobs/${resumed.id}/events?limit=100`)).json.data.map((e: Json) => e.message);
    assert.ok(messages.some((m: string) => /^Resumed from the checkpoint at step \d+ of 30$/.test(m)), messages.join('\n'));
    const weights = async (name: string) => Buffer.from(await (await fetch(`${server.url}/v1/deltas/${name}/files/adapter_model.safetensors`)).arrayBuffer());
    assert.ok((await weights('resumed')).equals(await weights('straight')), 'resumed training must end at the same weights as an uninterrupted run');
  });
});
