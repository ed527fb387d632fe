/**
 * Tenancy end to end on one real server: API keys from an auth file, each tenant's deltas visible
 * to it alone, public deltas visible to all, and everything else indistinguishable from a model
 * that does not exist.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { DeltaCatalog } from '../../src/deltas/catalog.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { Telemetry } from '../../src/telemetry/telemetry.js';
import { createApp } from '../../src/server/app.js';
import { TenantLimits } from '../../src/server/limits/tenant-limits.js';
import { hashKey } from '../../src/server/auth.js';
import type { ServerState } from '../../src/server/context.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const ref = loadReference();
const BASE = 'tiny-llama';
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const KEYS = { acme: 'sk-acme-0123', globex: 'sk-globex-4567', initech: 'sk-initech-89ab' } as const;
const ADMIN_KEY = 'sk-admin-cdef';
type Tenant = keyof typeof KEYS;
const TENANTS = Object.keys(KEYS) as Tenant[];

/** Every startup delta as owner/name, and whether it is public. */
const DELTAS: { owner: Tenant; name: string; public: boolean }[] = [
  { owner: 'acme', name: 'sql', public: false },
  { owner: 'acme', name: 'support', public: false },
  { owner: 'globex', name: 'chat', public: false },
  { owner: 'globex', name: 'shared', public: true },
  { owner: 'initech', name: 'docs', public: false },
  // Same name as acme's private one, and a different scale, to tell them apart.
  { owner: 'initech', name: 'support', public: true },
];
const visible = (d: (typeof DELTAS)[number], tenant: string) => d.owner === tenant || d.public;

async function request(server: RunningServer, route: string, key: string | undefined, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${server.url}${route}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

const one = (model: string) => ({ model, prompt: ref.input_ids[0], max_tokens: 1, temperature: 0 });
/** Prompt-token logprobs under `model`: identifies which delta actually ran. */
const echoLogprobs = (model: string) => ({ model, prompt: ref.input_ids[0], max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });

describe('tenancy on a real server with an auth file', () => {
  let server: RunningServer;
  let notFoundBody: Json;
  const complete = (tenant: Tenant | string, body: unknown, headers?: Record<string, string>) => request(server, '/v1/completions', KEYS[tenant as Tenant] ?? tenant, body, headers);

  /** The 404 a model that does not exist gets, with `model` substituted. */
  const missing = (model: string) => JSON.parse(JSON.stringify(notFoundBody).replace("'no-such-delta'", () => JSON.stringify(`'${model}'`).slice(1, -1)));

  before(async () => {
    const dir = tempDir('deltaserve-tenancy-');
    // initech's `support` is the fixture adapter at three times the scale.
    const scaled = path.join(dir, 'scaled');
    fs.mkdirSync(scaled);
    fs.copyFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'), path.join(scaled, 'adapter_model.safetensors'));
    const adapterConfig = JSON.parse(fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'), 'utf8'));
    fs.writeFileSync(path.join(scaled, 'adapter_config.json'), JSON.stringify({ ...adapterConfig, lora_alpha: adapterConfig.lora_alpha * 3 }));
    const authFile = path.join(dir, 'keys.json');
    fs.writeFileSync(
      authFile,
      JSON.stringify({ tenants: Object.fromEntries(TENANTS.map((t) => [t, { keys: [hashKey(KEYS[t])] }])), admin_keys: [hashKey(ADMIN_KEY)] }),
    );
    const config = ConfigSchema.parse({
      model: path.join(FIXTURE, 'base'),
      modelName: BASE,
      port: 0,
      host: '127.0.0.1',
      cacheDir: path.join(dir, 'cache'),
      dataDir: path.join(dir, 'data'),
      maxRows: 4,
      maxContext: 64,
      threads: 1,
      auth: authFile,
      delta: DELTAS.map((d) => `${d.owner}/${d.name}=${d.owner === 'initech' && d.name === 'support' ? scaled : LORA_DIR}`),
      publicDeltas: DELTAS.filter((d) => d.public).map((d) => `${d.owner}/${d.name}`),
    });
    server = await startServer(config);
    await server.ready;
    const res = await complete('acme', one('no-such-delta'));
    assert.equal(res.status, 404);
    notFoundBody = res.json;
    assert.deepEqual(notFoundBody, { error: { message: "model 'no-such-delta' does not exist", type: 'not_found_error', param: 'model', code: 'model_not_found' } });
  });
  after(() => server?.close());

  it('health routes need no key', async () => {
    assert.equal((await request(server, '/health/live', undefined)).status, 200);
    assert.equal((await request(server, '/health/ready', undefined)).status, 200);
  });

  it('a missing or unknown key is 401 in the OpenAI shape', async () => {
    const expected = (message: RegExp) => (json: Json) => {
      assert.deepEqual(Object.keys(json.error).sort(), ['code', 'message', 'param', 'type']);
      assert.equal(json.error.type, 'authentication_error');
      assert.equal(json.error.code, 'invalid_api_key');
      assert.equal(json.error.param, null);
      assert.match(json.error.message, message);
    };
    for (const route of ['/v1/completions', '/v1/models']) {
      const body = route === '/v1/completions' ? one(BASE) : undefined;
      const noKey = await request(server, route, undefined, body);
      assert.equal(noKey.status, 401, route);
      expected(/missing API key/)(noKey.json);
      const unknown = await request(server, route, 'sk-nobody', body);
      assert.equal(unknown.status, 401, route);
      expected(/invalid API key/)(unknown.json);
      // The stored hash is not a key.
      assert.equal((await request(server, route, hashKey(KEYS.acme), body)).status, 401);
    }
  });

  it('tenants × deltas: allowed cells are 200, forbidden ones are the 404 of a model that does not exist', async () => {
    for (const tenant of TENANTS) {
      assert.equal((await complete(tenant, one(BASE))).status, 200, `${tenant} → base`);
      for (const d of DELTAS) {
        const model = `${d.owner}/${d.name}`;
        const res = await complete(tenant, one(model));
        if (visible(d, tenant)) {
          assert.equal(res.status, 200, `${tenant} → ${model}: ${JSON.stringify(res.json)}`);
          assert.equal(res.json.model, model);
          assert.equal(res.json.usage.completion_tokens, 1);
        } else {
          assert.equal(res.status, 404, `${tenant} → ${model}: ${JSON.stringify(res.json)}`);
          assert.deepEqual(res.json, missing(model), `${tenant} → ${model}`);
        }
      }
    }
  });

  it('plain names: own deltas first, others’ public ones when unambiguous, others’ private ones never', async () => {
    const cases: [Tenant, string, boolean][] = [
      ['acme', 'sql', true],
      ['acme', 'support', true], // its own, not initech's public one
      ['acme', 'shared', true],
      ['acme', 'chat', false],
      ['acme', 'docs', false],
      ['globex', 'chat', true],
      ['globex', 'shared', true],
      ['globex', 'support', true], // initech's public one: acme's is private
      ['globex', 'sql', false],
      ['globex', 'docs', false],
      ['initech', 'docs', true],
      ['initech', 'support', true],
      ['initech', 'shared', true],
      ['initech', 'sql', false],
      ['initech', 'chat', false],
    ];
    for (const [tenant, model, allowed] of cases) {
      const res = await complete(tenant, one(model));
      if (allowed) assert.equal(res.status, 200, `${tenant} → ${model}: ${JSON.stringify(res.json)}`);
      else assert.deepEqual({ status: res.status, json: res.json }, { status: 404, json: missing(model) }, `${tenant} → ${model}`);
    }
  });

  it('a name resolves to the right owner’s delta', async () => {
    const lp = async (tenant: Tenant, model: string) => {
      const res = await complete(tenant, echoLogprobs(model));
      assert.equal(res.status, 200, `${tenant} → ${model}: ${JSON.stringify(res.json)}`);
      return res.json.choices[0].logprobs.token_logprobs as (number | null)[];
    };
    const acmeSupport = await lp('acme', 'support');
    const initechSupport = await lp('acme', 'initech/support');
    assert.notDeepEqual(acmeSupport, initechSupport, 'the scaled adapter should change the logprobs');
    assert.deepEqual(await lp('acme', 'acme/support'), acmeSupport);
    assert.deepEqual(await lp('acme', 'sql'), acmeSupport, 'same adapter, same scale');
    assert.deepEqual(await lp('globex', 'support'), initechSupport);
    assert.deepEqual(await lp('initech', 'support'), initechSupport);
    assert.notDeepEqual(await lp('acme', BASE), acmeSupport);
  });

  it('/v1/models lists the base and exactly the deltas each tenant may use', async () => {
    const expectedIds: Record<Tenant, string[]> = {
      acme: ['sql', 'support', 'globex/shared', 'initech/support'],
      globex: ['chat', 'shared', 'initech/support'],
      initech: ['globex/shared', 'docs', 'support'],
    };
    for (const tenant of TENANTS) {
      const res = await request(server, '/v1/models', KEYS[tenant]);
      assert.equal(res.status, 200);
      const [base, ...deltas] = res.json.data as Json[];
      assert.equal(base.id, BASE);
      assert.equal(base.parent, null);
      assert.deepEqual(deltas.map((m) => m.id).sort(), expectedIds[tenant].sort(), tenant);
      for (const m of deltas) {
        assert.equal(m.parent, BASE);
        assert.equal(m.object, 'model');
        const owner = m.id.includes('/') ? m.id.split('/')[0] : tenant;
        assert.equal(m.owned_by, owner, `${tenant}: ${m.id}`);
        // Every listed id is usable as-is.
        assert.equal((await complete(tenant, one(m.id))).status, 200, `${tenant} → ${m.id}`);
      }
    }
  });

  it('name@1 is the registered delta; name@2 is 404 naming the version; hidden deltas stay hidden', async () => {
    assert.equal((await complete('acme', one('sql@1'))).status, 200);
    assert.equal((await complete('acme', one('acme/sql@1'))).status, 200);
    assert.equal((await complete('globex', one('initech/support@1'))).status, 200);
    const v2 = await complete('acme', one('sql@2'));
    assert.equal(v2.status, 404);
    assert.equal(v2.json.error.param, 'model');
    assert.match(v2.json.error.message, /^model 'sql@2' does not exist: .*version '2'/);
    assert.deepEqual(await complete('globex', one('acme/sql@1')), { status: 404, json: missing('acme/sql@1') });
    assert.deepEqual(await complete('globex', one('sql@2')), { status: 404, json: missing('sql@2') });
  });

  it('admin keys act as tenant admin (public deltas only) or as the tenant X-Deltaserve-Tenant names', async () => {
    const models = await request(server, '/v1/models', ADMIN_KEY);
    assert.deepEqual((models.json.data as Json[]).slice(1).map((m) => m.id).sort(), ['globex/shared', 'initech/support']);
    assert.deepEqual(await complete(ADMIN_KEY, one('acme/sql')), { status: 404, json: missing('acme/sql') });
    assert.equal((await complete(ADMIN_KEY, one('acme/sql'), { 'x-deltaserve-tenant': 'acme' })).status, 200);
    assert.equal((await complete(ADMIN_KEY, one('sql'), { 'x-deltaserve-tenant': 'acme' })).status, 200);
    assert.equal((await complete('acme', one('sql'), { 'x-deltaserve-tenant': 'globex' })).status, 403);
  });
});

describe('open mode (no auth file)', () => {
  // No engine needed: the model list and the middleware run without one.
  const deltas = new DeltaCatalog();
  deltas.add({ owner: 'default', name: 'mine', public: false, kind: 'lora', summary: { rank: 8, modules: 7 }, virtualTokens: 0, createdAt: 1, version: 1, versions: [1], bytes: 100 });
  deltas.add({ owner: 'acme', name: 'private', public: false, kind: 'lora', summary: { rank: 8, modules: 7 }, virtualTokens: 0, createdAt: 2, version: 1, versions: [1], bytes: 100 });
  deltas.add({ owner: 'acme', name: 'shared', public: true, kind: 'lora', summary: { rank: 8, modules: 7 }, virtualTokens: 0, createdAt: 3, version: 1, versions: [1], bytes: 100 });
  const state = { modelName: BASE, deltas, auth: null, maxBodyBytes: 4096, requestTimeoutMs: 0, startedAt: Date.now(), telemetry: Telemetry.create(), logger: createLogger({ level: 'silent' }), logPrompts: false, publicMetrics: false, maxChoices: 256, limits: new TenantLimits({ requestsPerSecond: 0, requestBurst: 0, tokensPerSecond: 0, tokenBurst: 0, maxConcurrent: 0 }), inFlight: 0, draining: false } as unknown as ServerState;
  const app = createApp(state);

  it('needs no key: every request is the default tenant, which owns unprefixed deltas', async () => {
    const res = await app.request('/v1/models');
    assert.equal(res.status, 200);
    const ids = ((await res.json()).data as Json[]).map((m) => m.id);
    assert.deepEqual(ids, [BASE, 'mine', 'acme/shared']);
  });

  it('completions without a key get past authentication (503 while the model loads)', async () => {
    const res = await app.request('/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(one('mine')) });
    assert.equal(res.status, 503);
  });
});
