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
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, logSoftmax, tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { oraclePromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { oracleForward } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE_DIR = path.join(FIXTURE, 'base');
const CONTEXT = 64;

/** After prompt P_i, continue with target T_i. */
const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];
const row = (ids: number[], labelled = ids) => JSON.stringify({ input_ids: ids, labels: ids.map((id, i) => (i < ids.length - labelled.length ? -100 : id)) });
const JSONL = TASK.map(({ prompt, target }) => row([...prompt, ...target], target)).join('\n');
const PROBES = [[17, 250, 9, 42, 100, 300, 301], [5, 6, 7, 8]];

describe('prompt tuning through the fine-tuning endpoint', () => {
  let server: RunningServer;
  const start = async (extra: Record<string, unknown> = {}) => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: BASE_DIR, modelName: 'tiny-llama', maxContext: CONTEXT, threads: 1, maxVirtualTokens: 64, logLevel: 'warn', ...extra }));
    await server.ready;
  };
  after(() => server?.close());

  const call = async (method: string, route: string, body?: unknown) => {
    const init: RequestInit = { method };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) Object.assign(init, { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const res = await fetch(`${server.url}${route}`, init);
    return { status: res.status, json: (await res.json()) as Json };
  };
  const uploadFile = async (text: string) => {
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob([text]), 'task.jsonl');
    const res = await call('POST', '/admin/v1/files', form);
    assert.equal(res.status, 201, JSON.stringify(res.json));
    return res.json.id as string;
  };
  const waitFor = async (id: string) => {
    for (;;) {
      const { json } = await call('GET', `/admin/v1/fine_tuning/jobs/${id}`);
      if (json.status === 'succeeded' || json.status === 'failed') return json;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const job = (fileId: string, options: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    model: 'tiny-llama',
    training_file: fileId,
    name: 'prompted',
    method: { type: 'prompt_tuning', prompt_tuning: options },
    hyperparameters: { max_steps: 20, batch_size: 2, learning_rate: 5e-2, lr_scheduler: 'constant', max_grad_norm: null },
    seed: 7,
    ...extra,
  });
  /** Echoed prompt logprobs (the first token has none). */
  const logprobs = async (model: string, prompt: number[]) => {
    const res = await call('POST', '/v1/completions', { model, prompt, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return (res.json.choices[0].logprobs.token_logprobs as (number | null)[]).slice(1) as number[];
  };

  it('trains from init_text, lowers the loss, and round-trips: download, --delta on a restarted server, same logprobs', async () => {
    await start();
    const created = await call('POST', '/admin/v1/fine_tuning/jobs', job(await uploadFile(JSONL), { num_virtual_tokens: 4, init: 'text', init_text: 'Continue the list' }));
    assert.equal(created.status, 201, JSON.stringify(created.json));
    const done = await waitFor(created.json.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    const events = (await call('GET', `/admin/v1/fine_tuning/jobs/${done.id}/events?limit=100`)).json.data;
    const losses = events.filter((e: Json) => e.type === 'metrics' && 'train_loss' in e.data).reverse().map((e: Json) => e.data.train_loss as number);
    assert.equal(losses.length, 20);
    assert.ok(losses[19]! < losses[0]! - 0.1, `loss fell from ${losses[0]} to ${losses[19]}`);

    const dir = tempDir();
    for (const file of ['adapter_config.json', 'adapter_model.safetensors']) {
      const res = await fetch(`${server.url}/v1/deltas/${done.fine_tuned_model}/files/${file}`);
      assert.equal(res.status, 200);
      fs.writeFileSync(path.join(dir, file), Buffer.from(await res.arrayBuffer()));
    }
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([config.peft_type, config.prompt_tuning_init, config.prompt_tuning_init_text, config.num_virtual_tokens, config.token_dim], ['PROMPT_TUNING', 'TEXT', 'Continue the list', 4, 64]);
    const served = await Promise.all(PROBES.map((p) => logprobs(done.fine_tuned_model, p)));

    await server.close();
    await start({ delta: [`restored=${dir}`] });
    const restored = await Promise.all(PROBES.map((p) => logprobs('restored', p)));
    served.forEach((lp, i) => lp.forEach((v, t) => assert.ok(Math.abs(v - restored[i]![t]!) <= 1e-6, `probe ${i} token ${t}: job ${v}, restored ${restored[i]![t]}`)));

    // And what PEFT would compute with the downloaded directory (the oracle's virtual tokens).
    const model = readConfig(BASE_DIR);
    const weights = loadWeightsF32(BASE_DIR);
    PROBES.forEach((ids, i) => {
      const logits = oracleForward(model, weights, ids, undefined, [oraclePromptTuning(dir)]);
      ids.slice(1).forEach((id, t) => assert.ok(Math.abs(logSoftmax(logits[t]!)[id]! - restored[i]![t]!) <= 1e-4, `probe ${i} token ${t + 1} against the oracle`));
    });
  });

  it('virtual tokens that fill the context, or a row that no longer fits after them, are 400s naming the option or the line', async () => {
    const long = Array.from({ length: 58 }, (_, i) => (i * 7) % 500);
    const fileId = await uploadFile([JSONL, row(long)].join('\n'));
    const full = await call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, { num_virtual_tokens: CONTEXT }));
    assert.equal(full.status, 400, JSON.stringify(full.json));
    assert.equal(full.json.error.param, 'method.prompt_tuning.num_virtual_tokens');
    const rowTooLong = await call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, { num_virtual_tokens: 8 }));
    assert.equal(rowTooLong.status, 400, JSON.stringify(rowTooLong.json));
    assert.equal(rowTooLong.json.error.param, 'training_file');
    assert.match(rowTooLong.json.error.message, /line 3: the row has 58 tokens; after the 8 virtual tokens/);
    // The same file fits with fewer virtual tokens.
    assert.equal((await call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, { num_virtual_tokens: 6 }, { hyperparameters: { max_steps: 1, batch_size: 2 } }))).status, 201);
    for (const [options, param] of [[{ num_virtual_tokens: 4, init: 'text' }, 'method.prompt_tuning.init_text'], [{ num_virtual_tokens: 4, init_text: 'x' }, 'method.prompt_tuning.init_text'], [{ num_virtual_tokens: 4, prompt_tuning_init: 'TEXT' }, 'method.prompt_tuning']] as const) {
      const res = await call('POST', '/admin/v1/fine_tuning/jobs', job(fileId, options));
      assert.equal(res.status, 400, JSON.stringify(res.json));
      assert.equal(res.json.error.param, param, JSON.stringify(res.json));
    }
  });
});
