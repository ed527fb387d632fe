import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { ApiError } from '../errors.js';
import { onError } from '../middleware/on-error.js';
import { createLogger } from '../../telemetry/logger.js';
import { admitGeneration, rateLimit, recordGeneratedTokens } from './rate-limit.js';
import { TenantLimits, type TenantLimitOptions } from './tenant-limits.js';

const UNLIMITED = { requestsPerSecond: 0, requestBurst: 0, tokensPerSecond: 0, tokenBurst: 0, maxConcurrent: 0 };

/** A promise the test resolves by hand, so a streaming route waits exactly as long as the test wants. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/**
 * A tiny app: the tenant comes from a header (as authenticate would set it), then rateLimit, then a
 * JSON route, a streaming route that waits on a gate between its two events, and failing routes.
 */
function appWith(options: Partial<TenantLimitOptions>) {
  const clock = { ms: 0 };
  const limits = new TenantLimits({ ...UNLIMITED, ...options, now: () => clock.ms });
  const app = new Hono();
  app.onError(onError({ logger: createLogger({ level: 'silent' }) }));
  const streams = { gate: gate(), aborted: false, finished: false };
  app.use('*', async function tenant(c, next) {
    c.set('tenant', c.req.header('x-tenant') ?? 'acme');
    await next();
  });
  app.use('*', rateLimit({ limits }));
  app.post('/json', (c) => {
    admitGeneration(c, Number(c.req.query('choices') ?? 1));
    recordGeneratedTokens(c, Number(c.req.query('tokens') ?? 0));
    return c.json({ ok: true });
  });
  app.post('/bad', (c) => {
    admitGeneration(c, 1);
    throw new ApiError(400, 'bad request', 'prompt', 'invalid_value');
  });
  app.post('/stream', (c) => {
    admitGeneration(c, 1);
    return streamSSE(c, async (stream) => {
      stream.onAbort(() => {
        streams.aborted = true;
      });
      await stream.writeSSE({ data: 'first' });
      await streams.gate.opened;
      if (c.req.query('fail')) throw new Error('generation failed');
      await stream.writeSSE({ data: 'last' });
      streams.finished = true;
    });
  });
  app.post('/broken', (c) => {
    admitGeneration(c, 1);
    const body = new ReadableStream<Uint8Array>({ pull: (controller) => controller.error(new Error('source failed')) });
    return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
  });
  const post = (path: string, tenant = 'acme') => app.request(path, { method: 'POST', headers: { 'x-tenant': tenant } });
  return { limits, clock, post, streams };
}

async function assert429(res: Response, retryAfter: string, pattern: RegExp): Promise<void> {
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), retryAfter);
  const body = (await res.json()) as { error: Record<string, unknown> };
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(body.error['type'], 'rate_limit_error');
  assert.equal(body.error['code'], 'rate_limit_exceeded');
  assert.equal(body.error['param'], null);
  assert.match(String(body.error['message']), pattern);
}

describe('rateLimit middleware', () => {
  it('refuses past the request burst with 429, Retry-After and the OpenAI error shape', async () => {
    const { post, clock } = appWith({ requestsPerSecond: 0.5, requestBurst: 2 });
    assert.equal((await post('/json')).status, 200);
    assert.equal((await post('/json')).status, 200);
    await assert429(await post('/json'), '2', /tenant 'acme' is over its limit of 0.5 requests per second \(burst 2\); retry in 2 s/);
    clock.ms += 2_000;
    assert.equal((await post('/json')).status, 200);
  });

  it('leaves another tenant unaffected while one is throttled', async () => {
    const { post } = appWith({ requestsPerSecond: 1, requestBurst: 1 });
    assert.equal((await post('/json', 'acme')).status, 200);
    assert.equal((await post('/json', 'acme')).status, 429);
    assert.equal((await post('/json', 'globex')).status, 200);
    assert.equal((await post('/json', 'acme')).status, 429);
  });

  it('charges tokens recorded by the route, so the next request waits out the debt', async () => {
    const { post, clock } = appWith({ tokensPerSecond: 100, tokenBurst: 100 });
    assert.equal((await post('/json?tokens=450')).status, 200);
    await assert429(await post('/json'), '4', /100 generated tokens per second/);
    assert.equal((await post('/json', 'globex')).status, 200);
    clock.ms += 3_510;
    assert.equal((await post('/json')).status, 200);
  });

  it('releases a JSON response when the handler returns, before its body is read', async () => {
    const { post, limits } = appWith({ maxConcurrent: 1 });
    const res = await post('/json');
    assert.equal(limits.inFlight('acme'), 0);
    assert.equal((await post('/json')).status, 200);
    await res.body?.cancel();
  });

  it('releases a request whose handler fails, and the error keeps its own shape', async () => {
    const { post, limits } = appWith({ maxConcurrent: 1 });
    const res = await post('/bad');
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { error: { message: 'bad request', type: 'invalid_request_error', param: 'prompt', code: 'invalid_value' } });
    assert.equal(limits.inFlight('acme'), 0);
  });

  it('holds the concurrency slot until a streamed response is fully read', async () => {
    const { post, limits, streams } = appWith({ maxConcurrent: 1 });
    const res = await post('/stream');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const reader = res.body!.getReader();
    assert.match(new TextDecoder().decode((await reader.read()).value), /data: first/);
    assert.equal(limits.inFlight('acme'), 1, 'the handler has returned but the stream has not ended');
    await assert429(await post('/stream'), '1', /has 1 generation choices in flight/);
    assert.equal((await post('/json', 'globex')).status, 200);
    streams.gate.open();
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += new TextDecoder().decode(r.value);
    assert.match(rest, /data: last/);
    assert.equal(streams.finished, true);
    assert.equal(limits.inFlight('acme'), 0);
    assert.equal((await post('/json')).status, 200);
  });

  it('releases the slot when the client cancels the body stream, and the handler sees the abort', async () => {
    const { post, limits, streams } = appWith({ maxConcurrent: 1 });
    const res = await post('/stream');
    const reader = res.body!.getReader();
    await reader.read();
    const pending = reader.read(); // a read in flight when the client goes away
    await reader.cancel(new Error('client disconnected'));
    assert.deepEqual(await pending, { done: true, value: undefined });
    assert.equal(limits.inFlight('acme'), 0);
    assert.equal(streams.aborted, true);
    streams.gate.open();
    assert.equal((await post('/json')).status, 200);
  });

  it('releases the slot when a stream fails midway', async () => {
    const { post, limits, streams } = appWith({ maxConcurrent: 1 });
    const log = console.error;
    console.error = () => {}; // streamSSE logs the handler's error
    try {
      const res = await post('/stream?fail=1');
      const text = res.text();
      streams.gate.open();
      assert.match(await text, /data: first/);
    } finally {
      console.error = log;
    }
    assert.equal(limits.inFlight('acme'), 0);
  });

  it('releases the slot when the body stream itself errors', async () => {
    const { post, limits } = appWith({ maxConcurrent: 1 });
    const res = await post('/broken');
    assert.equal(limits.inFlight('acme'), 1);
    await assert.rejects(res.text(), /source failed/);
    assert.equal(limits.inFlight('acme'), 0);
  });

  it('validates its options once, and needs a tenant', async () => {
    assert.throws(() => rateLimit({} as never), /options\.limits/);
    assert.throws(() => rateLimit(undefined as never), /options\.limits/);
    const app = new Hono();
    app.onError(onError({ logger: createLogger({ level: 'silent' }) }));
    app.use('*', rateLimit({ limits: new TenantLimits(UNLIMITED) }));
    app.get('/', (c) => c.text('ok'));
    const log = console.error;
    console.error = () => {};
    try {
      assert.equal((await app.request('/')).status, 500);
    } finally {
      console.error = log;
    }
  });

  it('recordGeneratedTokens is a no-op where rateLimit is not mounted', async () => {
    const app = new Hono();
    app.get('/', (c) => {
      recordGeneratedTokens(c, 10);
      return c.text('ok');
    });
    assert.equal((await app.request('/')).status, 200);
  });
});
