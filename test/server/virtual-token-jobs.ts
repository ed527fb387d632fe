/**
 * What the prompt- and prefix-tuning job tests share: a server on the Llama fixture (restartable
 * with other settings, e.g. `--delta`), the admin calls they make, a two-row memorisation task,
 * and echoed prompt logprobs.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, tempDir } from '../helpers.js';

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
