/**
 * Tenant safety through HTTP, probed as an attacker would: poisoned adapters, pathological
 * patterns, huge request lists, unbounded uploads, names that are not names, metrics that would
 * leak, and one tenant trying to take every share of the server. Each case the tenant-safety issue
 * listed has a test here.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { encodeSafetensors, parseSafetensors } from '../../src/model/safetensors.js';
import { DeltaCatalog } from '../../src/deltas/catalog.js';
import { createApp } from '../../src/server/app.js';
import { hashKey, loadAuthFile } from '../../src/server/auth.js';
import type { ServerState } from '../../src/server/context.js';
import { TenantLimits } from '../../src/server/limits/tenant-limits.js';
import { Telemetry } from '../../src/telemetry/telemetry.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { FIXTURE, LogLines, loadReference, tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const CONFIG = JSON.parse(fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'), 'utf8'));
const WEIGHTS = fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'));
const KEYS = { acme: 'sk-acme-1', globex: 'sk-globex-2', admin: 'sk-admin-3', metrics: 'sk-metrics-4' } as const;

/** The fixture adapter with every tensor mapped through `f`. */
function scaledWeights(f: (v: number) => number): Uint8Array {
  const parsed = parseSafetensors(WEIGHTS, 'fixture');
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [name, entry] of parsed.header.tensors) tensors[name] = { dtype: 'F32', shape: entry.shape, data: parsed.tensor(name).map(f) };
  return encodeSafetensors(tensors);
}

function deltaForm(name: string, config: Record<string, unknown>, weights: Uint8Array = WEIGHTS): FormData {
  const form = new FormData();
  form.set('name', name);
  form.set('adapter_config', new Blob([JSON.stringify(config)]), 'adapter_config.json');
  form.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  return form;
}

class Client {
  constructor(private readonly server: () => RunningServer, private readonly key?: string) {}
  async request(method: string, route: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Json; headers: Headers }> {
    const init: RequestInit = { method, headers: { ...(this.key ? { authorization: `Bearer ${this.key}` } : {}), ...headers } };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] = 'application/json';
    }
    const res = await fetch(`${this.server().url}${route}`, init);
    const text = await res.text();
    let json: Json = text;
    try {
      json = JSON.parse(text);
    } catch {
      // /metrics and SSE are text
    }
    return { status: res.status, json, headers: res.headers };
  }
  post = (route: string, body?: unknown, headers?: Record<string, string>) => this.request('POST', route, body, headers);
  get = (route: string, headers?: Record<string, string>) => this.request('GET', route, undefined, headers);
}

/** Prompt-token logprobs of model under a tenant: what identifies the numbers a row computed. */
const echo = (model: string) => ({ model, prompt: ref.input_ids[0], max_tokens: 4, echo: true, logprobs: 2, temperature: 0 });

function authFile(dir: string): string {
  const file = path.join(dir, 'keys.json');
  fs.writeFileSync(file, JSON.stringify({ tenants: { acme: { keys: [hashKey(KEYS.acme)] }, globex: { keys: [hashKey(KEYS.globex)] } }, admin_keys: [hashKey(KEYS.admin)], metrics_keys: [hashKey(KEYS.metrics)] }));
  return file;
}

describe('tenant safety on a real server with an auth file', () => {
  const dir = tempDir('deltaserve-abuse-');
  const logs = new LogLines();
  let server: RunningServer;
  const acme = new Client(() => server, KEYS.acme);
  const globex = new Client(() => server, KEYS.globex);
  const admin = new Client(() => server, KEYS.admin);
  const scraper = new Client(() => server, KEYS.metrics);
  const anonymous = new Client(() => server);

  before(async () => {
    const config = ConfigSchema.parse({
      model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', port: 0, cacheDir: path.join(dir, 'cache'), dataDir: path.join(dir, 'data'),
      maxRows: 4, maxContext: 64, maxQueue: 32, threads: 1, maxRank: 8, auth: authFile(dir), maxDeltaBytes: 400_000,
      tenantMaxDeltas: 3, tenantMaxConcurrent: 8, tenantRequestsPerSecond: 0, tenantMaxJobs: 1, tenantMaxTrainingFiles: 1,
      delta: [`globex/shared=${LORA_DIR}`], publicDeltas: ['globex/shared'],
    });
    server = await startServer(config, { logger: createLogger({ destination: logs }) });
    await server.ready;
    assert.equal((await acme.post('/v1/deltas', deltaForm('good', CONFIG))).status, 201);
  });
  after(() => server.close());

  describe('one tenant cannot touch another tenant’s numbers', () => {
    it('lora_alpha "abc" is a 422 naming the field, and nothing is stored', async () => {
      const res = await acme.post('/v1/deltas', deltaForm('bad-alpha', { ...CONFIG, lora_alpha: 'abc' }));
      assert.equal(res.status, 422);
      assert.match(res.json.error.message, /lora_alpha must be a finite number, got "abc"/);
      assert.equal((await acme.get('/v1/deltas/bad-alpha')).status, 404);
    });

    it('lora_alpha 1e38 is a 422 naming the field', async () => {
      const res = await acme.post('/v1/deltas', deltaForm('big-alpha', { ...CONFIG, lora_alpha: 1e38 }));
      assert.equal(res.status, 422);
      assert.match(res.json.error.message, /lora_alpha must be at most 1000000, got 1e\+38/);
    });

    it('finite weights of 1e30 are accepted, fail only their own requests, and leave concurrent ones of other tenants exactly as they are alone', async () => {
      assert.equal((await acme.post('/v1/deltas', deltaForm('huge', CONFIG, scaledWeights((v) => Math.sign(v) * 1e30)))).status, 201);
      const alone = await globex.post('/v1/completions', echo('shared'));
      assert.equal(alone.status, 200);
      const [poisoned, beside, after] = await Promise.all([acme.post('/v1/completions', echo('huge')), globex.post('/v1/completions', echo('shared')), globex.post('/v1/completions', echo('tiny-llama'))]);
      assert.equal(poisoned.status, 422, JSON.stringify(poisoned.json));
      assert.match(poisoned.json.error.message, /produced non-finite logits/);
      assert.deepEqual(beside.json.choices, alone.json.choices);
      assert.equal(after.status, 200);
      // The next request on the rows and slot the poisoned one used is clean too.
      assert.deepEqual((await globex.post('/v1/completions', echo('shared'))).json.choices, alone.json.choices);
    });

    it('a catastrophic-backtracking rank_pattern is matched in linear time and accepted', async () => {
      const res = await acme.post('/v1/deltas', deltaForm('redos', { ...CONFIG, rank_pattern: { '(\\w|.)*Z': 4 } }));
      assert.equal(res.status, 201, JSON.stringify(res.json));
      await acme.request('DELETE', '/v1/deltas/redos');
    });

    it('tensors of modules the config does not target are ignored as PEFT ignores them, and reported', async () => {
      const res = await acme.post('/v1/deltas', deltaForm('only-q', { ...CONFIG, target_modules: ['q_proj'] }));
      assert.equal(res.status, 201);
      assert.ok(res.json.warnings.length > 0 && res.json.warnings.every((w: string) => /ignored/.test(w)), JSON.stringify(res.json.warnings));
      await acme.request('DELETE', '/v1/deltas/only-q');
    });
  });

  describe('bounded admission', () => {
    it('a 100,000-prompt request is a 400 before anything is tokenized', async () => {
      const res = await acme.post('/v1/completions', { model: 'tiny-llama', prompt: Array.from({ length: 100_000 }, () => 'hi'), max_tokens: 1 });
      assert.equal(res.status, 400);
      assert.equal(res.json.error.code, 'too_many_choices');
      assert.equal(res.json.error.param, 'prompt');
    });

    it('a prompt text that cannot fit the context is refused without encoding it', async () => {
      const res = await acme.post('/v1/completions', { model: 'tiny-llama', prompt: 'x'.repeat(1_000_000), max_tokens: 1 });
      assert.equal(res.status, 400);
      assert.equal(res.json.error.code, 'context_length_exceeded');
    });

    it('a chunked upload without Content-Length is cut off at the limit while it arrives', async () => {
      let pulled = 0;
      const boundary = 'deltaserve-boundary';
      const head = new TextEncoder().encode(`--${boundary}\r\nContent-Disposition: form-data; name="adapter_model"; filename="a.safetensors"\r\n\r\n`);
      const chunk = new Uint8Array(64 * 1024);
      let sentHead = false;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (pulled > 1024 ** 3) return controller.close();
          const next = sentHead ? chunk : head;
          sentHead = true;
          pulled += next.length;
          controller.enqueue(next);
        },
      });
      const res = await fetch(`${server.url}/v1/deltas`, { method: 'POST', body, headers: { authorization: `Bearer ${KEYS.acme}`, 'content-type': `multipart/form-data; boundary=${boundary}` }, duplex: 'half' } as RequestInit);
      assert.equal(res.status, 413);
      // The limit is 400 kB; the server stopped reading soon after (what a socket buffers besides).
      assert.ok(pulled < 16 * 1024 * 1024, `the client was made to send ${pulled} bytes`);
      await res.text();
    });
  });

  describe('names and paths are parsed once, and a malformed one is a 4xx', () => {
    for (const [route, status] of [['/v1/deltas/%', 400], ['/v1/deltas/%zz/files/adapter_config.json', 400], ['/v1/deltas/a..b', 404], ['/v1/deltas/x/y/z', 404], ['/v1/deltas/good@0', 404]] as const) {
      it(`GET ${route} is ${status}`, async () => {
        const res = await acme.get(route);
        assert.equal(res.status, status, JSON.stringify(res.json));
        assert.ok(res.json.error.message);
      });
    }

    it("an upload named 'a..b' is a 400 naming the field", async () => {
      const res = await acme.post('/v1/deltas', deltaForm('a..b', CONFIG));
      assert.equal(res.status, 400);
      assert.equal(res.json.error.param, 'name');
      assert.match(res.json.error.message, /must not contain '\.\.'/);
    });

    it("an admin acting as tenant '..' is a 400", async () => {
      const res = await admin.get('/v1/models', { 'x-deltaserve-tenant': '..' });
      assert.equal(res.status, 400);
      assert.equal(res.json.error.code, 'invalid_tenant');
    });
  });

  describe('metrics and logs', () => {
    it('/metrics needs a metrics or admin key, and labels never carry client-chosen model names', async () => {
      await acme.post('/v1/completions', { model: 'no-such-model-xyz', prompt: [1, 2], max_tokens: 1 });
      assert.equal((await anonymous.get('/metrics')).status, 401);
      assert.equal((await acme.get('/metrics')).status, 403);
      const res = await scraper.get('/metrics');
      assert.equal(res.status, 200);
      assert.equal((await admin.get('/metrics')).status, 200);
      assert.doesNotMatch(res.json, /no-such-model-xyz/);
      assert.match(res.json, /gen_ai_request_model="unknown"/);
      // A metrics key reaches nothing else.
      assert.equal((await scraper.get('/v1/models')).status, 403);
    });

    it('admin operations leave audit lines with the tenant and the key id, never the key', async () => {
      await acme.post('/v1/deltas', deltaForm('audited', CONFIG));
      await admin.post('/admin/v1/deltas/acme/audited/pin');
      await admin.request('DELETE', '/admin/v1/deltas/acme/audited/pin');
      await admin.request('DELETE', '/v1/deltas/acme/audited');
      const audits = logs.lines.filter((l) => l.msg === 'audit' && /audited/.test(JSON.stringify(l)));
      assert.deepEqual(audits.map((l) => l.audit), ['delta.create', 'delta.pin', 'delta.unpin', 'delta.delete']);
      assert.equal(audits[0].tenant, 'acme');
      assert.equal(audits[0].keyId, hashKey(KEYS.acme).slice(0, 'sha256:'.length + 12));
      assert.equal(audits[1].admin, true);
      const all = JSON.stringify(logs.lines);
      for (const key of Object.values(KEYS)) assert.ok(!all.includes(key), 'no key in any log line');
    });
  });

  describe('quotas and limits', () => {
    it('a tenant at its delta quota gets 429 quota_exceeded; another tenant is unaffected', async () => {
      // acme holds 'good' and 'huge'; a third is allowed, a fourth is not.
      assert.equal((await acme.post('/v1/deltas', deltaForm('third', CONFIG))).status, 201);
      const refused = await acme.post('/v1/deltas', deltaForm('fourth', CONFIG));
      assert.equal(refused.status, 429);
      assert.equal(refused.json.error.code, 'quota_exceeded');
      assert.match(refused.json.error.message, /--tenant-max-deltas/);
      assert.equal((await acme.get('/v1/deltas/fourth')).status, 404, 'nothing stored');
      // A new version of an existing delta is not a new delta.
      assert.equal((await acme.post('/v1/deltas', deltaForm('third', CONFIG))).status, 201);
      assert.equal((await globex.post('/v1/deltas', deltaForm('fourth', CONFIG))).status, 201);
    });

    it('more choices in one request than a tenant may have in flight is a 400, not a 429 that could never clear', async () => {
      const res = await acme.post('/v1/completions', { model: 'tiny-llama', prompt: [1], max_tokens: 1, n: 9 });
      assert.equal(res.status, 400);
      assert.equal(res.json.error.code, 'too_many_choices');
      assert.match(res.json.error.message, /--tenant-max-concurrent/);
      assert.equal((await acme.post('/v1/completions', { model: 'tiny-llama', prompt: [1], max_tokens: 1, n: 8 })).status, 200);
    });

    it('fine-tuning jobs: unknown tenants, bad names and out-of-range hyperparameters are 400 at creation', async () => {
      const file = new FormData();
      file.set('purpose', 'fine-tune');
      file.set('file', new Blob(['{"prompt": "a", "completion": "b"}\n']), 'train.jsonl');
      const uploaded = await admin.post('/admin/v1/files', file);
      assert.equal(uploaded.status, 201);
      const job = (patch: Record<string, unknown>) => admin.post('/admin/v1/fine_tuning/jobs', { model: 'tiny-llama', training_file: uploaded.json.id, tenant: 'acme', name: 'ft', ...patch });
      const unknown = await job({ tenant: 'nobody' });
      assert.equal(unknown.status, 400);
      assert.equal(unknown.json.error.code, 'unknown_tenant');
      assert.equal((await job({ name: 'a..b' })).json.error.param, 'name');
      const alpha = await job({ method: { type: 'lora', lora: { alpha: 1e308 } } });
      assert.equal(alpha.status, 400);
      assert.match(alpha.json.error.param, /method\.lora\.alpha/);
    });

    it("public deltas are usable by every tenant, but only their owner and admins download them", async () => {
      assert.equal((await acme.post('/v1/completions', echo('shared'))).status, 200);
      const download = await acme.get('/v1/deltas/globex/shared/files/adapter_model.safetensors');
      assert.equal(download.status, 403);
      assert.equal((await globex.get('/v1/deltas/shared/files/adapter_config.json')).status, 200);
      assert.equal((await admin.get('/v1/deltas/globex/shared/files/adapter_config.json')).status, 200);
    });
  });
});

describe('per-tenant request rate', () => {
  const dir = tempDir('deltaserve-rate-');
  let server: RunningServer;
  const acme = new Client(() => server, KEYS.acme);
  const globex = new Client(() => server, KEYS.globex);
  before(async () => {
    server = await startServer(ConfigSchema.parse({ model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', port: 0, cacheDir: path.join(dir, 'cache'), dataDir: path.join(dir, 'data'), maxContext: 64, threads: 1, auth: authFile(dir), tenantRequestsPerSecond: 0.01, tenantRequestBurst: 3 }), { logger: createLogger({ level: 'silent' }) });
    await server.ready;
  });
  after(() => server.close());

  it('past its burst a tenant gets 429 with Retry-After, and another tenant is unaffected', async () => {
    const one = { model: 'tiny-llama', prompt: [1, 2], max_tokens: 1 };
    for (let i = 0; i < 3; i++) assert.equal((await acme.post('/v1/completions', one)).status, 200);
    const refused = await acme.post('/v1/completions', one);
    assert.equal(refused.status, 429);
    assert.equal(refused.json.error.type, 'rate_limit_error');
    assert.match(refused.json.error.message, /over its limit of 0\.01 requests per second \(burst 3\)/);
    assert.ok(Number(refused.headers.get('retry-after')) >= 90);
    assert.equal((await globex.post('/v1/completions', one)).status, 200);
  });
});

describe('/metrics with --public-metrics', () => {
  // The adapter labels list the deltas in the batch at the moment of the scrape, so the engine's
  // report is fixed here rather than raced against real generations.
  const deltas = new DeltaCatalog();
  deltas.add({ owner: 'acme', name: 'private', public: false, kind: 'lora', summary: { rank: 8, modules: 14 }, virtualTokens: 0, createdAt: 1, version: 1, versions: [1], bytes: 1 });
  deltas.add({ owner: 'acme', name: 'open', public: true, kind: 'lora', summary: { rank: 8, modules: 14 }, virtualTokens: 0, createdAt: 2, version: 1, versions: [1], bytes: 1 });
  const engine = { info: { maxRows: 4, deltaSlots: 2 }, stats: async () => ({ waiting: 1, running: 1, runningDeltas: ['acme/private@1'], waitingDeltas: ['acme/open@1'], servedKinds: ['lora'] }) };
  const dir = tempDir('deltaserve-metrics-');
  const appFor = (publicMetrics: boolean) => createApp({ modelName: 'base', deltas, engine, auth: loadAuthFile(authFile(dir)), publicMetrics, maxBodyBytes: 4096, maxChoices: 16, telemetry: Telemetry.create(), logger: createLogger({ level: 'silent' }), limits: new TenantLimits({ requestsPerSecond: 0, requestBurst: 0, tokensPerSecond: 0, tokenBurst: 0, maxConcurrent: 0 }) } as unknown as ServerState);

  it('is open without a key and lists only public deltas; with a metrics key it lists all', async () => {
    const open = await appFor(true).request('/metrics');
    assert.equal(open.status, 200);
    const text = await open.text();
    assert.match(text, /waiting_lora_adapters="open,acme\/open,acme\/open@1"/);
    assert.match(text, /running_lora_adapters=""/);
    const keyed = await appFor(true).request('/metrics', { headers: { authorization: `Bearer ${KEYS.metrics}` } });
    assert.match(await keyed.text(), /running_lora_adapters="private,acme\/private,acme\/private@1"/);
  });

  it('without --public-metrics it needs a key', async () => {
    assert.equal((await appFor(false).request('/metrics')).status, 401);
    assert.equal((await appFor(false).request('/metrics', { headers: { authorization: `Bearer ${KEYS.acme}` } })).status, 403);
    assert.match(await (await appFor(false).request('/metrics', { headers: { authorization: `Bearer ${KEYS.admin}` } })).text(), /acme\/private@1/);
  });
});

describe('truthful results: a generation cut by --request-timeout-ms', () => {
  // The engine's side (a sequence whose deadline passes ends with 'timeout') is tested in the
  // scheduler's tests; here an engine that times out after two tokens shows what the client sees.
  const logs = new LogLines();
  const engine = {
    info: { vocabSize: 512, maxContext: 64, eosTokenIds: [0], maxRows: 4, deltaSlots: 2 },
    async *generate(request: { id: string }) {
      yield { type: 'queued', id: request.id };
      yield { type: 'admitted', id: request.id, deltaTier: 'none', deltaLoadMs: 0 };
      yield { type: 'token', id: request.id, token: 5, logprob: NaN };
      yield { type: 'token', id: request.id, token: 6, logprob: NaN };
      yield { type: 'done', id: request.id, finishReason: 'timeout', promptTokens: 2, completionTokens: 2 };
    },
  };
  const app = createApp({ modelName: 'base', deltas: new DeltaCatalog(), engine, auth: null, publicMetrics: false, maxBodyBytes: 4096, maxChoices: 16, requestTimeoutMs: 100, telemetry: Telemetry.create(), logger: createLogger({ destination: logs }), inFlight: 0, draining: false, limits: new TenantLimits({ requestsPerSecond: 0, requestBurst: 0, tokensPerSecond: 0, tokenBurst: 0, maxConcurrent: 0 }) } as unknown as ServerState);

  it("reports finish_reason 'timeout' (not 'length'), and its log line's outcome is 'timeout'", async () => {
    const res = await app.request('/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'base', prompt: [1, 2], max_tokens: 30, return_token_ids: true }) });
    assert.equal(res.status, 200);
    const body = (await res.json()) as Json;
    assert.equal(body.choices[0].finish_reason, 'timeout');
    assert.deepEqual(body.choices[0].token_ids, [5, 6]);
    const line = logs.lines.find((l) => l.msg === 'generation');
    assert.equal(line.outcome, 'timeout');
    assert.deepEqual(line.finishReasons, ['timeout']);
  });
});
