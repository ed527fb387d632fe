/**
 * What the prompt-, prefix- and P-tuning job tests share: a server on the Llama fixture
 * (restartable with other settings, e.g. `--delta`), the admin calls they make, their job
 * requests, a two-row memorisation task, and the round trip of its delta (echoed prompt logprobs
 * served, restored with `--delta`, and computed by the oracle).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, logSoftmax, tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { oracleForward, type OracleDelta } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
export const BASE_DIR = path.join(FIXTURE, 'base');
export const CONTEXT = 64;

/** After prompt P_i, continue with target T_i. */
const TASK = [
  { prompt: [17, 250, 9, 42, 100], target: [300, 301, 302, 303, 304, 305] },
  { prompt: [400, 6, 77, 120, 33], target: [210, 211, 212, 213, 214, 215] },
];

/** A JSONL row of token ids, with loss on its last `labelled` tokens (all by default). */
export const row = (ids: number[], labelled = ids.length) => JSON.stringify({ input_ids: ids, labels: ids.map((id, i) => (i < ids.length - labelled ? -100 : id)) });
export const TASK_JSONL = TASK.map(({ prompt, target }) => row([...prompt, ...target], target.length)).join('\n');
/** Prompts whose logprobs the round trip compares: one from the task, one not. */
export const PROBES = [[17, 250, 9, 42, 100, 300, 301], [5, 6, 7, 8]];

/**
 * A job request builder for `method.type` `kind`: 20 steps of 2 rows at a constant
 * `learningRate`, no clipping, seed 7; `extra` overrides top-level fields.
 *
 * @example const job = jobRequests('p_tuning', 'ptuned', 1e-2); await s.train(job(fileId, { num_virtual_tokens: 4 }));
 */
export function jobRequests(kind: string, name: string, learningRate: number) {
  return (fileId: string, options: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    model: 'tiny-llama',
    training_file: fileId,
    name,
    method: { type: kind, [kind]: options },
    hyperparameters: { max_steps: 20, batch_size: 2, learning_rate: learningRate, lr_scheduler: 'constant', max_grad_norm: null },
    seed: 7,
    ...extra,
  });
}

/** A server on the fixture, its admin calls, and the job helpers. */
export class JobServer {
  server?: RunningServer;

  async start(extra: Record<string, unknown> = {}): Promise<void> {
    this.server = await startServer(ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: BASE_DIR, modelName: 'tiny-llama', maxContext: CONTEXT, threads: 1, maxVirtualTokens: 64, logLevel: 'warn', ...extra }));
    await this.server.ready;
  }

  async close(): Promise<void> {
    await this.server?.close();
  }

  async call(method: string, route: string, body?: unknown): Promise<{ status: number; json: Json }> {
    const init: RequestInit = { method };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) Object.assign(init, { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const res = await fetch(`${this.server!.url}${route}`, init);
    return { status: res.status, json: (await res.json()) as Json };
  }

  async uploadFile(text: string): Promise<string> {
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob([text]), 'task.jsonl');
    const res = await this.call('POST', '/admin/v1/files', form);
    assert.equal(res.status, 201, JSON.stringify(res.json));
    return res.json.id as string;
  }

  /** Creates a job, waits for it to end, and asserts it succeeded; returns the job and its train losses in step order. */
  async train(request: unknown): Promise<{ job: Json; losses: number[] }> {
    const created = await this.call('POST', '/admin/v1/fine_tuning/jobs', request);
    assert.equal(created.status, 201, JSON.stringify(created.json));
    let job: Json;
    for (;;) {
      job = (await this.call('GET', `/admin/v1/fine_tuning/jobs/${created.json.id}`)).json;
      if (job.status === 'succeeded' || job.status === 'failed') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const events = (await this.call('GET', `/admin/v1/fine_tuning/jobs/${job.id}/events?limit=100`)).json.data;
    const losses = events.filter((e: Json) => e.type === 'metrics' && 'train_loss' in e.data).reverse().map((e: Json) => e.data.train_loss as number);
    return { job, losses };
  }

  /** Asserts that creating the job `request` is a 400; returns the error. */
  async refusal(request: unknown): Promise<Json> {
    const res = await this.call('POST', '/admin/v1/fine_tuning/jobs', request);
    assert.equal(res.status, 400, JSON.stringify(res.json));
    return res.json.error;
  }

  /**
   * Trains `request` (20 steps), asserts the loss fell by more than 0.1, and downloads the delta:
   * the job, the delta's directory and adapter_config.json, and its echoed logprobs of PROBES.
   */
  async trainAndDownload(request: unknown): Promise<{ job: Json; dir: string; config: Json; served: number[][] }> {
    const { job, losses } = await this.train(request);
    console.log('train loss: step 1', losses[0], 'step 20', losses[19]);
    assert.equal(losses.length, 20);
    assert.ok(losses[19]! < losses[0]! - 0.1, `loss fell from ${losses[0]} to ${losses[19]}`);
    const dir = await this.download(job.fine_tuned_model);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    return { job, dir, config, served: await this.probeLogprobs(job.fine_tuned_model) };
  }

  /** Restarts the server with `--delta restored=DIR`; asserts it serves `served` (≤ 1e-6) and returns what it serves. */
  async restore(dir: string, served: number[][]): Promise<number[][]> {
    await this.close();
    await this.start({ delta: [`restored=${dir}`] });
    const restored = await this.probeLogprobs('restored');
    assertClose(served, restored, 1e-6, 'restored');
    return restored;
  }

  /** Echoed logprobs of each of PROBES. */
  probeLogprobs(model: string): Promise<number[][]> {
    return Promise.all(PROBES.map((p) => this.logprobs(model, p)));
  }

  /** GET /v1/deltas/{id}/files/... into a fresh directory. */
  async download(model: string): Promise<string> {
    const dir = tempDir();
    for (const file of ['adapter_config.json', 'adapter_model.safetensors']) {
      const res = await fetch(`${this.server!.url}/v1/deltas/${model}/files/${file}`);
      assert.equal(res.status, 200, `${model}/${file}`);
      fs.writeFileSync(path.join(dir, file), Buffer.from(await res.arrayBuffer()));
    }
    return dir;
  }

  /** Echoed prompt logprobs of tokens 1.. (the first has none). */
  async logprobs(model: string, prompt: number[]): Promise<number[]> {
    const res = await this.call('POST', '/v1/completions', { model, prompt, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return (res.json.choices[0].logprobs.token_logprobs as (number | null)[]).slice(1) as number[];
  }
}

/**
 * Asserts two logprob lists per probe agree within `tolerance`.
 *
 * @example assertClose(served, restored, 1e-6, 'restored')
 */
export function assertClose(want: number[][], got: number[][], tolerance: number, what: string): void {
  want.forEach((lp, i) => lp.forEach((v, t) => assert.ok(Math.abs(v - got[i]![t]!) <= tolerance, `probe ${i} token ${t + 1}: ${v} vs ${what} ${got[i]![t]}`)));
}

/**
 * The oracle's logprobs of PROBES (tokens 1..) on the fixture with the delta `load` returns for its config.
 *
 * @example assertClose(oracleLogprobs(() => oraclePromptTuning(dir)), restored, 1e-4, 'served')
 */
export function oracleLogprobs(load: (modelConfig: Json) => OracleDelta): number[][] {
  const model = readConfig(BASE_DIR);
  const weights = loadWeightsF32(BASE_DIR);
  return PROBES.map((ids) => oracleForward(model, weights, ids, undefined, [load(model)]).slice(0, -1).map((logits, t) => logSoftmax(logits)[ids[t + 1]!]!));
}
