/**
 * IA3, BitFit and LN tuning trained through POST /admin/v1/fine_tuning/jobs on the tiny Llama
 * fixture, each round-tripped: the job's delta served, its files downloaded, a second server
 * started with `--delta NAME=DIR` of the downloaded directory; the echoed prompt logprobs of the
 * two agree within 1e-6, and with the float64 oracle reading the downloaded directory (PEFT's
 * format, read by the oracle's port of PEFT's loading) within 1e-4. Bad options are 400s naming
 * the field, at job creation.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, logSoftmax, tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { bitfitOracle } from '../oracle/kinds/bitfit.js';
import { loadOracleIa3 } from '../oracle/kinds/ia3.js';
import { lnTuningOracle } from '../oracle/kinds/ln-tuning.js';
import { oracleForward, type OracleDelta } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE = path.join(FIXTURE, 'base');
const SETTINGS = { port: 0, model: BASE, modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, logLevel: 'warn' };
const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const JSONL = TASK.map(({ prompt, target }) => JSON.stringify({ input_ids: [...prompt, ...target], labels: [...prompt.map(() => -100), ...target] })).join('\n');
const PROMPT = [...TASK[0]!.prompt, ...TASK[0]!.target];

/** Each kind's job options, its oracle from a downloaded directory, and what its adapter_config must say. */
const KINDS: { type: string; options: Record<string, unknown>; oracle(dir: string): OracleDelta; peftType: string }[] = [
  { type: 'ia3', options: {}, oracle: (dir) => loadOracleIa3(dir, BASE), peftType: 'IA3' },
  { type: 'bitfit', options: {}, oracle: (dir) => bitfitOracle(dir, loadWeightsF32(BASE)), peftType: 'BITFIT' },
  { type: 'ln_tuning', options: {}, oracle: (dir) => lnTuningOracle(dir, readConfig(BASE), loadWeightsF32(BASE)), peftType: 'LN_TUNING' },
];

/** Bad options: the request's patch and the field the 400 must name. */
const BAD: [Record<string, unknown>, string, RegExp?][] = [
  [{ type: 'ia3', ia3: { target_modules: ['q_proj'], feedforward_modules: ['down_proj'] } }, 'method.ia3.feedforward_modules', /subset/],
  [{ type: 'ia3', ia3: { init_ia3_weights: false } }, 'method.ia3', /init_ia3_weights/],
  [{ type: 'ia3', ia3: { target_modules: ['no_such_proj'] } }, 'method.ia3.target_modules', /selects no module/],
  [{ type: 'ia3', ia3: { target_modules: 'model\\.embed_tokens' } }, 'method.ia3.target_modules', /linear layers only/],
  [{ type: 'bitfit', bitfit: { target_modules: 'lm_head' } }, 'method.bitfit.target_modules', /linear layers only/],
  [{ type: 'bitfit', bitfit: { bias: 'all' } }, 'method.bitfit', /bias/],
  [{ type: 'ln_tuning', ln_tuning: { target_modules: ['input_layernorm', 'q_proj'] } }, 'method.ln_tuning.target_modules', /not a norm/],
  [{ type: 'ln_tuning', ln_tuning: { target_modules: 'all-linear' } }, 'method.ln_tuning.target_modules', /not a norm/],
  [{ type: 'ln_tuning', ln_tuning: { modules_to_save: ['lm_head'] } }, 'method.ln_tuning', /modules_to_save/],
];

async function start(extra: Record<string, unknown> = {}): Promise<RunningServer> {
  const server = await startServer(ConfigSchema.parse({ ...SETTINGS, cacheDir: tempDir(), dataDir: tempDir(), ...extra }));
  await server.ready;
  return server;
}

async function call(server: RunningServer, method: string, route: string, body?: unknown): Promise<{ status: number; json: Json }> {
  const init: RequestInit = { method };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) Object.assign(init, { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const res = await fetch(`${server.url}${route}`, init);
  return { status: res.status, json: (await res.json()) as Json };
}

/** The job once it ended, which must be in success. */
async function waitFor(server: RunningServer, id: string): Promise<Json> {
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const job = (await call(server, 'GET', `/admin/v1/fine_tuning/jobs/${id}`)).json;
    if (job.status === 'failed') assert.fail(JSON.stringify(job.error));
    if (job.status === 'succeeded') return job;
  }
}

/** The echoed prompt logprobs of `model` (token 0 has none). */
async function promptLogprobs(server: RunningServer, model: string, prompt = PROMPT): Promise<number[]> {
  const res = await call(server, 'POST', '/v1/completions', { model, prompt, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  return (res.json.choices[0].logprobs.token_logprobs as (number | null)[]).slice(1) as number[];
}

describe('IA3, BitFit and LN tuning jobs through HTTP', () => {
  let server: RunningServer;
  let fileId: string;
  before(async () => {
    server = await start();
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob([JSONL]), 'task.jsonl');
    fileId = (await call(server, 'POST', '/admin/v1/files', form)).json.id;
  });
  after(() => server.close());

  const job = (method: Record<string, unknown>, name: string) => ({
    model: 'tiny-llama',
    training_file: fileId,
    validation_file: fileId,
    name,
    method,
    hyperparameters: { max_steps: 20, batch_size: 2, learning_rate: 2e-2, lr_scheduler: 'constant', max_grad_norm: null },
    seed: 7,
  });

  for (const kind of KINDS) {
    it(`${kind.type}: trained, served, downloaded, served again from --delta with the same logprobs`, async () => {
      const name = `trained-${kind.type.replace('_', '-')}`;
      const created = await call(server, 'POST', '/admin/v1/fine_tuning/jobs', job({ type: kind.type, [kind.type]: kind.options }, name));
      assert.equal(created.status, 201, JSON.stringify(created.json));
      const done = await waitFor(server, created.json.id);
      const events = (await call(server, 'GET', `/admin/v1/fine_tuning/jobs/${done.id}/events?limit=100`)).json.data;
      const losses = events.filter((e: Json) => e.type === 'metrics' && 'train_loss' in e.data).reverse().map((e: Json) => e.data.train_loss as number);
      assert.equal(losses.length, 20);
      assert.ok(losses[19] < losses[0] - 0.05, `loss ${losses[0]} → ${losses[19]}`);

      // The trainer's final validation loss (its graph, the trained parameters) is the served delta's loss on the same rows.
      const rows = await Promise.all(TASK.map(async (t) => (await promptLogprobs(server, done.fine_tuned_model, [...t.prompt, ...t.target])).slice(t.prompt.length - 1)));
      const servedLoss = -rows.flat().reduce((a, b) => a + b, 0) / rows.flat().length;
      assert.ok(Math.abs(servedLoss - done.valid_loss) <= 1e-5 * done.valid_loss, `served loss ${servedLoss} vs the job's valid_loss ${done.valid_loss}`);
      // A job continuing from the delta starts from its weights: its first step's loss is that loss too.
      const continued = await call(server, 'POST', '/admin/v1/fine_tuning/jobs', { ...job({ type: kind.type }, `${name}-more`), model: name, hyperparameters: { max_steps: 1, batch_size: 2, learning_rate: 1e-3 } });
      assert.equal(continued.status, 201, JSON.stringify(continued.json));
      const first = (await waitFor(server, continued.json.id)).loss;
      assert.ok(Math.abs(first - done.valid_loss) <= 1e-5 * done.valid_loss, `continued job's first loss ${first} vs ${done.valid_loss}`);
      const served = await promptLogprobs(server, done.fine_tuned_model);
      const base = await promptLogprobs(server, 'tiny-llama');
      assert.ok(served.some((v, i) => Math.abs(v - base[i]!) > 1e-3), 'the trained delta changes the model');
      const dir = tempDir();
      for (const file of ['adapter_config.json', 'adapter_model.safetensors']) {
        const res = await fetch(`${server.url}/v1/deltas/${name}/files/${file}`);
        assert.equal(res.status, 200);
        fs.writeFileSync(path.join(dir, file), Buffer.from(await res.arrayBuffer()));
      }
      assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')).peft_type, kind.peftType);

      const restarted = await start({ delta: [`downloaded=${dir}`] });
      try {
        const again = await promptLogprobs(restarted, 'downloaded');
        const worst = Math.max(...again.map((v, i) => Math.abs(v - served[i]!)));
        assert.ok(worst <= 1e-6, `--delta of the download vs the job's served result: max |Δ logprob| ${worst}`);
        console.log(`${kind.type}: --delta of the download vs the job's served result, max |Δ logprob| ${worst}`);
      } finally {
        await restarted.close();
      }
      const logits = oracleForward(readConfig(BASE), loadWeightsF32(BASE), PROMPT, undefined, [kind.oracle(dir)]);
      const oracle = PROMPT.slice(1).map((id, t) => logSoftmax(logits[t]!)[id]!);
      const error = Math.max(...oracle.map((v, i) => Math.abs(v - served[i]!)));
      assert.ok(error <= 1e-4, `served vs the oracle of the downloaded files: ${error}`);
      console.log(`${kind.type}: loss ${losses[0]} → ${losses[19]}; served vs oracle max |Δ logprob| ${error}`);
    });
  }

  it('bad options are 400s at job creation naming the field, and create no job', async () => {
    const before = (await call(server, 'GET', '/admin/v1/fine_tuning/jobs?limit=100')).json.data.length;
    for (const [method, param, message] of BAD) {
      const res = await call(server, 'POST', '/admin/v1/fine_tuning/jobs', job(method, 'refused'));
      assert.equal(res.status, 400, `${JSON.stringify(method)}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.error.param, param, JSON.stringify(res.json));
      if (message) assert.match(res.json.error.message, message);
    }
    assert.equal((await call(server, 'GET', '/admin/v1/fine_tuning/jobs?limit=100')).json.data.length, before);
  });
});
