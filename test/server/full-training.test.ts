/**
 * Full fine-tuning through the admin API: a job with `method.type: 'full'` trains every weight of
 * the served model and publishes a model directory (fine_tuned_model = its path under
 * <data-dir>/models); a server started with `--model` on that directory serves what was trained:
 * its echoed logprobs equal, within 1e-6, the training step graph's own evaluation of the
 * directory's weights (one target token at a time), and the float64 oracle's within 1e-4. Bad
 * requests (unknown options, a delta to continue from, a model over the memory budget) are 400s
 * at job creation naming the field.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { fullTraining } from '../../src/deltas/kinds/full-training.js';
import { freshTrainerState, Trainer } from '../../src/engine/trainer.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, logSoftmax, tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { oracleForward } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE = path.join(FIXTURE, 'base');
const LIMITS = { maxRank: 8, maxVirtualTokens: 8, maxBottleneck: 8 };

/** After prompt P_i, continue with target T_i (token ids the base model does not produce). */
const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const JSONL = TASK.map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] })).join('\n');

async function client(server: RunningServer) {
  const call = async (method: string, route: string, body?: unknown) => {
    const init: RequestInit = { method };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) Object.assign(init, { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const res = await fetch(`${server.url}${route}`, init);
    return { status: res.status, json: (await res.json()) as Json };
  };
  const greedy = async (model: string, prompt: number[]) => (await call('POST', '/v1/completions', { model, prompt, max_tokens: 6, temperature: 0, return_token_ids: true })).json.choices[0].token_ids as number[];
  const echo = async (model: string, prompt: number[]) => {
    const res = await call('POST', '/v1/completions', { model, prompt, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.choices[0].logprobs.token_logprobs as (number | null)[];
  };
  return { call, greedy, echo };
}

/** log p(ids[t] | ids[<t]) for t ≥ 1 as the training step graph computes it: one target token per evaluation. */
async function trainerLogprobs(modelDir: string, ids: number[]): Promise<number[]> {
  const ckpt = openCheckpoint(BASE);
  const options = fullTraining.resolve(ckpt.arch, { init: 'base' }, LIMITS);
  const weights = loadWeightsF32(modelDir);
  const params = new Map(fullTraining.params(ckpt.arch, options).map((p) => [p.name, Float32Array.from(weights.get(p.name)!.data)]));
  const trainer = await Trainer.create(ckpt, { cacheDir: tempDir(), device: 'cpu', rows: 1, seqLen: ids.length, kind: 'full', options }, freshTrainerState(params));
  try {
    const out: number[] = [];
    for (let t = 1; t < ids.length; t++) {
      const targetIds = Int32Array.from(ids, (_, i) => (i + 1 < ids.length ? ids[i + 1]! : 0));
      const targetMask = Float32Array.from(ids, (_, i) => (i === t - 1 ? 1 : 0));
      out.push(-(await trainer.evaluate([{ inputIds: BigInt64Array.from(ids.map(BigInt)), targetIds, targetMask }])));
    }
    return out;
  } finally {
    await trainer.release();
  }
}

describe('full fine-tuning through the admin API', () => {
  let server: RunningServer;
  let api: Awaited<ReturnType<typeof client>>;
  const dataDir = tempDir();
  const cacheDir = tempDir();
  before(async () => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir, dataDir, model: BASE, modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8 }));
    await server.ready;
    api = await client(server);
  });
  after(() => server.close());

  const uploadFile = async (text: string) => {
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob([text]), 'task.jsonl');
    return (await api.call('POST', '/admin/v1/files', form)).json.id as string;
  };
  const jobRequest = (fileId: string, extra: Record<string, unknown> = {}) => ({
    model: 'tiny-llama',
    training_file: fileId,
    name: 'full-memorized',
    method: { type: 'full' },
    hyperparameters: { max_steps: 20, batch_size: 2, learning_rate: 3e-3, lr_scheduler: 'constant', max_grad_norm: null },
    seed: 7,
    ...extra,
  });
  const waitFor = async (id: string) => {
    for (;;) {
      const { json } = await api.call('GET', `/admin/v1/fine_tuning/jobs/${id}`);
      if (['succeeded', 'failed', 'cancelled'].includes(json.status)) return json;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  it('job → model directory → a server on --model DIR serves the trained weights (logprobs within 1e-6 of the step graph)', async () => {
    const baseBefore = await Promise.all(TASK.map((t) => api.greedy('tiny-llama', t.prompt)));
    const created = await api.call('POST', '/admin/v1/fine_tuning/jobs', jobRequest(await uploadFile(JSONL)));
    assert.equal(created.status, 201, JSON.stringify(created.json));
    assert.deepEqual(created.json.method, { type: 'full', full: { init: 'base' } });
    const job = await waitFor(created.json.id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const dir = job.fine_tuned_model as string;
    assert.equal(dir, path.join(path.resolve(dataDir), 'models', job.id));
    const events = (await api.call('GET', `/admin/v1/fine_tuning/jobs/${job.id}/events?limit=100`)).json.data.filter((e: Json) => e.type === 'metrics').reverse();
    assert.ok(events.at(-1).data.train_loss < 0.5 * events[0].data.train_loss, `loss ${events[0].data.train_loss} → ${events.at(-1).data.train_loss}`);

    // A Hugging Face model directory: the base's config with float32 weights, its tokenizer files, F32 safetensors.
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    assert.deepEqual({ ...config, torch_dtype: undefined }, { ...readConfig(BASE), dtype: 'float32', torch_dtype: undefined });
    for (const file of ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'generation_config.json']) assert.ok(fs.readFileSync(path.join(dir, file)).equals(fs.readFileSync(path.join(BASE, file))), file);
    const trained = loadWeightsF32(dir);
    assert.deepEqual([...trained.keys()].sort(), [...loadWeightsF32(BASE).keys()].sort());
    // The served base is untouched.
    assert.deepEqual(await Promise.all(TASK.map((t) => api.greedy('tiny-llama', t.prompt))), baseBefore);

    const restarted = await startServer(ConfigSchema.parse({ port: 0, cacheDir, dataDir: tempDir(), model: dir, modelName: 'tiny-full', maxContext: 64, threads: 1, maxRank: 8, fullTrainingMaxBytes: 1000 }));
    try {
      await restarted.ready;
      const other = await client(restarted);
      for (const t of TASK) assert.deepEqual(await other.greedy('tiny-full', t.prompt), t.target);
      const ids = [...TASK[0]!.prompt, ...TASK[0]!.target];
      const served = (await other.echo('tiny-full', ids)).slice(1) as number[];
      const graph = await trainerLogprobs(dir, ids);
      const oracle = oracleForward(readConfig(dir), trained, ids).slice(0, -1).map((logits, t) => logSoftmax(logits)[ids[t + 1]!]!);
      const base = (await api.echo('tiny-llama', ids)).slice(1) as number[];
      served.forEach((lp, t) => {
        assert.ok(Math.abs(lp - graph[t]!) <= 1e-6, `position ${t + 1}: served ${lp}, step graph ${graph[t]}`);
        assert.ok(Math.abs(lp - oracle[t]!) <= 1e-4, `position ${t + 1}: served ${lp}, oracle ${oracle[t]}`);
      });
      assert.ok(served.some((lp, t) => Math.abs(lp - base[t]!) > 1), 'the trained model differs from the base');
      console.log('max |served - step graph|', Math.max(...served.map((lp, t) => Math.abs(lp - graph[t]!))), 'max |served - oracle|', Math.max(...served.map((lp, t) => Math.abs(lp - oracle[t]!))));

      // The budget: 158k parameters × 80 bytes do not fit in 1000 bytes.
      const refused = await other.call('POST', '/admin/v1/fine_tuning/jobs', { ...jobRequest(await uploadTo(restarted)), model: 'tiny-full' });
      assert.equal(refused.status, 400, JSON.stringify(refused.json));
      assert.equal(refused.json.error.param, 'method.full.init');
      assert.match(refused.json.error.message, /needs about 12\.1 MiB \(158016 parameters × 80 bytes.*over the server's budget of 1000 bytes/);
    } finally {
      await restarted.close();
    }
  });

  it('unknown options and a delta to continue from are 400s naming the field', async () => {
    const file = await uploadFile(JSONL);
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ method: { type: 'full', full: { init: 'zeros' } } }, 'method.full.init', /base.*random/],
      [{ method: { type: 'full', full: { lr: 1 } } }, 'method.full', /lr/],
      [{ method: { type: 'full', lora: {} } }, 'method', /lora/],
    ];
    for (const [patch, param, message] of cases) {
      const res = await api.call('POST', '/admin/v1/fine_tuning/jobs', { ...jobRequest(file), ...patch });
      assert.equal(res.status, 400, `${JSON.stringify(patch)}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.error.param, param, JSON.stringify(res.json));
      assert.match(res.json.error.message, message);
    }
    const lora = await api.call('POST', '/admin/v1/fine_tuning/jobs', { ...jobRequest(file), name: 'a-lora', method: { type: 'lora', lora: { r: 2 } }, hyperparameters: { max_steps: 1, batch_size: 2 } });
    assert.equal((await waitFor(lora.json.id)).status, 'succeeded');
    const continued = await api.call('POST', '/admin/v1/fine_tuning/jobs', { ...jobRequest(file), model: 'a-lora' });
    assert.equal(continued.status, 400);
    assert.equal(continued.json.error.param, 'model');
    assert.match(continued.json.error.message, /a full job continues only from a full delta/);
  });
});

async function uploadTo(server: RunningServer): Promise<string> {
  const form = new FormData();
  form.set('purpose', 'fine-tune');
  form.set('file', new Blob([JSONL]), 'task.jsonl');
  return ((await (await fetch(`${server.url}/admin/v1/files`, { method: 'POST', body: form })).json()) as Json).id;
}
