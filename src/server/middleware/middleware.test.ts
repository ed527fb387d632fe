import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Hono, type MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { InvalidDeltaNameError } from '../../deltas/store/common.js';
import { StorageFullError, StoreUnavailableError } from '../../deltas/store/unavailable.js';
import { EngineError } from '../../engine/types.js';
import { createLogger } from '../../telemetry/logger.js';
import { LogLines } from '../../../test/helpers.js';
import { ApiError } from '../errors.js';
import { MultipartError } from '../multipart-scanner.js';
import { adminOnly } from './admin.js';
import { drainable } from './drain.js';
import { onError } from './on-error.js';
import { requireReady } from './readiness.js';
import { requestLog } from './request-log.js';
import { jsonBody, validBody } from './json-body.js';
import { resolveRequestDeltas } from './resolve-deltas.js';
import { traceGeneration } from './trace.js';
import { admitChoices } from '../limits/rate-limit.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** An app whose one route throws `error`, behind the request log and the one onError. */
function throwing(error: unknown, logs = new LogLines()) {
  const logger = createLogger({ destination: logs });
  const app = new Hono();
  app.use(requestLog({ logger, quiet: () => false }));
  app.get('/boom', () => {
    throw error;
  });
  app.onError(onError({ logger }));
  return { app, logs };
}

/** A class nothing maps, dressed as an ApiError would be: status, code, param, a message with a secret. */
class LooksLikeAnApiError extends Error {
  readonly status = 400;
  readonly code = 'made_up';
  readonly param = 'model';
}

describe('onError maps the error table, and nothing else leaves as anything but a generic 500', () => {
  const cases: [string, Error, number, string | null, Record<string, string>][] = [
    ['ApiError', new ApiError(409, 'taken', 'name', 'conflict'), 409, 'conflict', {}],
    ['ZodError', z.object({ n: z.number() }).safeParse({ n: 'x' }).error!, 400, 'invalid_value', {}],
    ['MultipartError', new MultipartError(413, 'too big', 'file'), 413, 'body_too_large', {}],
    ['EngineError queue_full', new EngineError('queue_full', 'the queue is full'), 429, 'queue_full', { 'retry-after': '1' }],
    ['EngineError engine_restarting', new EngineError('engine_restarting', 'restarting'), 503, 'engine_restarting', { 'retry-after': '2' }],
    ['StoreUnavailableError', new StoreUnavailableError('S3', 'connection refused', 'connect ECONNREFUSED 10.0.0.5:9000'), 503, 'store_unavailable', { 'retry-after': '5' }],
    ['StorageFullError', new StorageFullError('the filesystem of --data-dir', 'ENOSPC', '/var/lib/deltaserve: ENOSPC'), 507, 'storage_full', {}],
    ['ENOSPC from node', Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }), 507, 'storage_full', {}],
    ['InvalidDeltaNameError', new InvalidDeltaNameError('name', '../x'), 400, 'invalid_value', {}],
  ];
  for (const [label, error, status, code, headers] of cases) {
    it(`${label} → ${status} ${code}`, async () => {
      const res = await throwing(error).app.request('/boom');
      assert.equal(res.status, status);
      const body = (await res.json()) as Json;
      assert.equal(body.error.code, code);
      assert.equal(typeof body.error.message, 'string');
      for (const [k, v] of Object.entries(headers)) assert.equal(res.headers.get(k), v);
    });
  }

  it('a store outage tells the client no endpoint; the raw cause is on the log line only', async () => {
    const { app, logs } = throwing(new StoreUnavailableError('S3', 'connection refused', 'connect ECONNREFUSED 10.0.0.5:9000'));
    const text = await (await app.request('/boom')).text();
    assert.ok(!text.includes('10.0.0.5'));
    assert.match(logs.lines.find((l) => l.msg === 'request').error, /10\.0\.0\.5/);
  });

  for (const [label, error] of [['a plain Error', new Error('open /srv/tenants/acme/secret failed')], ['a class the table does not know', new LooksLikeAnApiError('open /srv/tenants/acme/secret failed')]] as const) {
    it(`${label} is a 500 'internal server error'; its message and class only in the log`, async () => {
      const { app, logs } = throwing(error);
      const res = await app.request('/boom');
      assert.equal(res.status, 500);
      assert.deepEqual(await res.json(), { error: { message: 'internal server error', type: 'server_error', param: null, code: 'internal_error' } });
      const unexpected = logs.lines.find((l) => l.msg === 'unexpected error');
      assert.equal(unexpected.errorClass, error.constructor.name);
      assert.match(unexpected.stack, /secret failed/);
      assert.match(logs.lines.find((l) => l.msg === 'request').error, /secret failed/);
    });
  }
});

describe('middleware factories validate their options once', () => {
  it('each names what is wrong', () => {
    assert.throws(() => onError({} as never), /onError: options.logger/);
    assert.throws(() => requestLog({ logger: createLogger({ level: 'silent' }) } as never), /requestLog: options.quiet/);
    assert.throws(() => requireReady({ state: {}, needs: ['engine', 'gpu'] } as never), /requireReady: options.needs must list some of engine, deltaService, training, got \["engine","gpu"\]/);
    assert.throws(() => drainable({} as never), /drainable: options.state/);
    assert.throws(() => adminOnly({ strict: true } as never), /adminOnly takes no options, got strict/);
    assert.throws(() => jsonBody({ schema: z.object({}), maxBytes: 0 }), /jsonBody: options.maxBytes must be a positive integer, got 0/);
    assert.throws(() => admitChoices({ maxChoices: 1.5, choices: () => ({ prompts: 1, n: 1, param: 'n' }) }), /admitChoices: options.maxChoices must be a positive integer, got 1.5/);
    assert.throws(() => resolveRequestDeltas({ state: {} } as never), /resolveRequestDeltas: options.state/);
    assert.throws(() => traceGeneration({ operation: 'embeddings' } as never), /traceGeneration: options.operation must be 'text_completion' or 'chat', got "embeddings"/);
  });

  it('jsonBody: 400 naming the field, 413 over the cap, and the body only under the schema that validated it', async () => {
    const Body = z.object({ n: z.number() });
    const app = new Hono();
    app.post('/x', jsonBody({ schema: Body, maxBytes: 32 }), (c) => c.json({ n: validBody(c, Body).n }));
    app.post('/y', jsonBody({ schema: Body, maxBytes: 32 }), (c) => c.json(validBody(c, z.object({ n: z.number() }))));
    app.onError(onError({ logger: createLogger({ level: 'silent' }) }));
    const post = (path: string, body: string) => app.request(path, { method: 'POST', body });
    assert.deepEqual(await (await post('/x', '{"n": 2}')).json(), { n: 2 });
    const bad = (await (await post('/x', '{"n": "2"}')).json()) as Json;
    assert.equal(bad.error.param, 'n');
    assert.equal((await post('/x', JSON.stringify({ n: 1, pad: 'x'.repeat(40) }))).status, 413);
    assert.equal((await post('/y', '{"n": 2}')).status, 500, 'a handler asking with another schema is a wiring mistake');
  });
});

/** An app with `middleware` in front of a route that answers 200 (and sets isAdmin as authenticate would). */
function guarded(isAdmin: boolean, ...middleware: MiddlewareHandler[]) {
  const app = new Hono();
  app.use(async (c, next) => {
    c.set('isAdmin', isAdmin);
    await next();
  });
  for (const m of middleware) app.use('/x', m);
  app.get('/x', (c) => c.json({ ok: true }));
  app.onError(onError({ logger: createLogger({ level: 'silent' }) }));
  return app;
}

describe('adminOnly, drainable, requireReady', () => {
  it('adminOnly: 403 for a tenant key, through for an admin', async () => {
    const refused = await guarded(false, adminOnly()).request('/x');
    assert.equal(refused.status, 403);
    assert.equal(((await refused.json()) as Json).error.code, 'permission_denied');
    assert.equal((await guarded(true, adminOnly()).request('/x')).status, 200);
  });

  it('drainable: counts a request until it is done, refuses with 503 and Retry-After while draining', async () => {
    const state = { draining: false, inFlight: 0 };
    let seen = -1;
    const app = guarded(true, drainable({ state }), async (_c, next) => {
      seen = state.inFlight;
      await next();
    });
    assert.equal((await app.request('/x')).status, 200);
    assert.equal(seen, 1);
    assert.equal(state.inFlight, 0);
    state.draining = true;
    const refused = await app.request('/x');
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.equal(((await refused.json()) as Json).error.code, 'shutting_down');
    assert.equal(state.inFlight, 0);
  });

  it('requireReady: 503 model_loading while starting, 501 for training without a tokenizer, the service in context once there', async () => {
    const state: Json = {};
    const app = new Hono();
    app.get('/t', requireReady({ state, needs: ['training'] }), (c) => c.json({ jobs: c.get('training') === state.training }));
    app.onError(onError({ logger: createLogger({ level: 'silent' }) }));
    const loading = await app.request('/t');
    assert.equal(loading.status, 503);
    assert.equal(loading.headers.get('retry-after'), '1');
    assert.equal(((await loading.json()) as Json).error.code, 'model_loading');
    state.engine = {};
    assert.equal(((await (await app.request('/t')).json()) as Json).error.code, 'training_unavailable');
    state.training = {};
    assert.deepEqual(await (await app.request('/t')).json(), { jobs: true });
  });
});
