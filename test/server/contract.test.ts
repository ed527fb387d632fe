import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { DeltaCatalog } from '../../src/deltas/catalog.js';
import { createApp } from '../../src/server/app.js';
import type { ServerState } from '../../src/server/context.js';
import { ROUTES } from '../../src/server/contract/routes.js';
import { TenantLimits } from '../../src/server/limits/tenant-limits.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { Telemetry } from '../../src/telemetry/telemetry.js';
import { FIXTURE, tempDir } from '../helpers.js';
import { validate } from './json-schema.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');

/** The routes an app registers, as `METHOD pattern` (middleware, registered for ALL, left out). */
function registered(app: { routes: readonly { method: string; path: string }[] }): Set<string> {
  return new Set(app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path}`));
}

describe('the route table covers every route hono registers', () => {
  const state = { modelName: 'base', deltas: new DeltaCatalog(), auth: null, publicMetrics: false, maxBodyBytes: 4096, maxChoices: 16, telemetry: Telemetry.create(), logger: createLogger({ level: 'silent' }), limits: new TenantLimits({ requestsPerSecond: 0, requestBurst: 0, tokensPerSecond: 0, tokenBurst: 0, maxConcurrent: 0 }), inFlight: 0, draining: false } as unknown as ServerState;

  it('the registered routes are exactly the table\'s', () => {
    const table = new Set(ROUTES.map((r) => `${r.method} ${r.route}`));
    const app = registered(createApp(state));
    assert.deepEqual([...app].filter((r) => !table.has(r)), [], 'routes without a contract entry');
    assert.deepEqual([...table].filter((r) => !app.has(r)), [], 'contract entries without a route');
  });
});

describe('/openapi.json against a sample response of every route', () => {
  let server: RunningServer;
  let doc: Json;
  /** `METHOD path` of each documented operation a 2xx sample was validated for. */
  const sampled = new Set<string>();

  before(async () => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8 }), { logger: createLogger({ level: 'silent' }) });
    await server.ready;
    doc = await (await fetch(`${server.url}/openapi.json`)).json();
  });
  after(() => server.close());

  /**
   * Calls the server and validates its answer against the document: the operation must list the
   * status and the media type the server sent, and the body must match that media type's schema
   * (each `data:` event against `x-data-schema` for a stream).
   */
  const check = async (method: string, docPath: string, url: string, init: RequestInit = {}): Promise<{ status: number; body: Json }> => {
    const res = await fetch(`${server.url}${url}`, { method, ...init });
    const media = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
    const operation = doc.paths[docPath]?.[method.toLowerCase()];
    assert.ok(operation, `${method} ${docPath} is not in the document`);
    const response = operation.responses[String(res.status)];
    assert.ok(response, `${method} ${docPath}: status ${res.status} is not documented (documented: ${Object.keys(operation.responses).join(', ')})`);
    const content = response.content?.[media];
    assert.ok(content, `${method} ${docPath} ${res.status}: media type '${media}' is not documented (documented: ${Object.keys(response.content ?? {}).join(', ')})`);
    let body: Json;
    if (media === 'application/json') {
      body = await res.json();
      assert.deepEqual(validate(doc, content.schema, body), [], `${method} ${url} → ${res.status}`);
    } else if (media === 'text/event-stream') {
      const events = (await res.text()).split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice('data: '.length));
      assert.equal(events.at(-1), '[DONE]', `${method} ${url}: a stream ends with data: [DONE]`);
      body = events.slice(0, -1).map((e) => JSON.parse(e));
      assert.ok(body.length > 0, `${method} ${url}: the stream sent no events`);
      for (const event of body) assert.deepEqual(validate(doc, content['x-data-schema'], event), [], `${method} ${url} → event ${JSON.stringify(event).slice(0, 200)}`);
    } else {
      body = new Uint8Array(await res.arrayBuffer());
      assert.equal(content.schema.type, 'string');
      assert.ok(body.length > 0, `${method} ${url}: an empty body`);
    }
    if (res.status < 300) sampled.add(`${method} ${docPath}`);
    return { status: res.status, body };
  };
  const json = (body: unknown): RequestInit => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('health, metrics, the document itself and the model list', async () => {
    await check('GET', '/health/live', '/health/live');
    await check('GET', '/health/ready', '/health/ready');
    await check('GET', '/metrics', '/metrics');
    await check('GET', '/openapi.json', '/openapi.json');
    await check('GET', '/v1/models', '/v1/models');
  });

  it('completions and chat, whole and streamed, and their errors', async () => {
    const base = { model: 'tiny-llama', max_tokens: 3, temperature: 0, return_token_ids: true };
    await check('POST', '/v1/completions', '/v1/completions', json({ ...base, prompt: 'Hello', logprobs: 2, echo: true, n: 2 }));
    await check('POST', '/v1/completions', '/v1/completions', json({ ...base, prompt: [1, 2, 3], stream: true, stream_options: { include_usage: true } }));
    const chat = { ...base, messages: [{ role: 'user', content: 'Hi' }] };
    await check('POST', '/v1/chat/completions', '/v1/chat/completions', json({ ...chat, logprobs: true, top_logprobs: 2 }));
    await check('POST', '/v1/chat/completions', '/v1/chat/completions', json({ ...chat, stream: true, stream_options: { include_usage: true } }));
    assert.equal((await check('POST', '/v1/completions', '/v1/completions', json({ ...base, model: 'nothing', prompt: 'x' }))).status, 404);
    assert.equal((await check('POST', '/v1/chat/completions', '/v1/chat/completions', json({ ...chat, temperature: 9 }))).status, 400);
  });

  it('deltas: upload, list, describe, both files, the cache controls, delete', async () => {
    const form = new FormData();
    form.set('name', 'contract');
    form.set('adapter_config', new Blob([fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'))]), 'adapter_config.json');
    form.set('adapter_model', new Blob([fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'))]), 'adapter_model.safetensors');
    assert.equal((await check('POST', '/v1/deltas', '/v1/deltas', { body: form })).status, 201);
    await check('GET', '/v1/deltas', '/v1/deltas');
    await check('GET', '/v1/deltas/{id}', '/v1/deltas/contract');
    await check('GET', '/v1/deltas/{id}/files/adapter_config.json', '/v1/deltas/contract/files/adapter_config.json');
    await check('GET', '/v1/deltas/{id}/files/adapter_model.safetensors', '/v1/deltas/contract@1/files/adapter_model.safetensors');
    await check('POST', '/admin/v1/deltas/{id}/prefetch', '/admin/v1/deltas/contract/prefetch');
    await check('POST', '/admin/v1/deltas/{id}/pin', '/admin/v1/deltas/default%2Fcontract@1/pin');
    await check('DELETE', '/admin/v1/deltas/{id}/pin', '/admin/v1/deltas/contract/pin');
    await check('DELETE', '/v1/deltas/{id}', '/v1/deltas/contract');
    assert.equal((await check('GET', '/v1/deltas/{id}', '/v1/deltas/contract')).status, 404);
  });

  it('training files and fine-tuning jobs: create, list, get, cancel, events (list and stream)', async () => {
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob(['{"prompt": "one", "completion": " two"}\n{"prompt": "three", "completion": " four"}\n']), 'task.jsonl');
    const file = (await check('POST', '/admin/v1/files', '/admin/v1/files', { body: form })).body;
    await check('GET', '/admin/v1/files', '/admin/v1/files');
    await check('GET', '/admin/v1/files/{id}', `/admin/v1/files/${file.id}`);
    await check('GET', '/admin/v1/files/{id}/content', `/admin/v1/files/${file.id}/content`);
    const request = { model: 'tiny-llama', training_file: file.id, method: { type: 'lora', lora: { r: 4, alpha: 8, target_modules: ['q_proj'] } }, hyperparameters: { max_steps: 2, batch_size: 1 }, seed: 1 };
    const job = (await check('POST', '/admin/v1/fine_tuning/jobs', '/admin/v1/fine_tuning/jobs', json({ ...request, name: 'contract-job' }))).body;
    const queued = (await check('POST', '/admin/v1/fine_tuning/jobs', '/admin/v1/fine_tuning/jobs', json({ ...request, name: 'contract-cancelled', hyperparameters: { max_steps: 1000, batch_size: 1 } }))).body;
    await check('POST', '/admin/v1/fine_tuning/jobs/{id}/cancel', `/admin/v1/fine_tuning/jobs/${queued.id}/cancel`);
    assert.equal((await check('POST', '/admin/v1/fine_tuning/jobs/{id}/cancel', `/admin/v1/fine_tuning/jobs/${queued.id}/cancel`)).status, 409);
    await check('GET', '/admin/v1/fine_tuning/jobs', '/admin/v1/fine_tuning/jobs?limit=5');
    // The stream ends when the job does, so this also waits for it.
    await check('GET', '/admin/v1/fine_tuning/jobs/{id}/events', `/admin/v1/fine_tuning/jobs/${job.id}/events?stream=true`);
    const done = (await check('GET', '/admin/v1/fine_tuning/jobs/{id}', `/admin/v1/fine_tuning/jobs/${job.id}`)).body;
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    const events = (await check('GET', '/admin/v1/fine_tuning/jobs/{id}/events', `/admin/v1/fine_tuning/jobs/${job.id}/events`)).body;
    assert.ok(events.data.some((e: Json) => e.type === 'metrics'));
    assert.equal((await check('GET', '/admin/v1/fine_tuning/jobs/{id}', '/admin/v1/fine_tuning/jobs/ftjob-nothing')).status, 404);
    await check('DELETE', '/admin/v1/files/{id}', `/admin/v1/files/${file.id}`);
  });

  it('every documented operation had a sample (a new route needs one)', () => {
    const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
    assert.deepEqual(documented.filter((op) => !sampled.has(op)), []);
    assert.equal(documented.length, ROUTES.length);
  });
});
