import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, logSoftmax, tempDir } from '../helpers.js';

const ref = loadReference();
const BASE = 'tiny-llama';
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const MAX_BODY = 4096;

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

async function post(server: RunningServer, body: unknown, route = '/v1/completions'): Promise<{ status: number; json: Json; headers: Headers }> {
  const res = await fetch(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined, headers: res.headers };
}

async function complete(server: RunningServer, body: Record<string, unknown>): Promise<Json> {
  const { status, json } = await post(server, body);
  assert.equal(status, 200, `expected 200, got ${status}: ${JSON.stringify(json)}`);
  return json;
}

const greedy = (model: string, prompt: unknown, extra: Record<string, unknown> = {}) => ({ model, prompt, max_tokens: 12, temperature: 0, return_token_ids: true, ...extra });

/** Asserts an OpenAI-shaped error body; `param` names the field when given. */
function assertError(res: { status: number; json: Json }, status: number, param?: string | null, messageIncludes?: string | RegExp): void {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.json)}`);
  const err = res.json?.error;
  assert.ok(err, `no error body: ${JSON.stringify(res.json)}`);
  assert.equal(typeof err.message, 'string');
  assert.ok(err.message.length > 0);
  assert.equal(typeof err.type, 'string');
  assert.ok('param' in err && 'code' in err, `error body lacks param/code: ${JSON.stringify(err)}`);
  if (param !== undefined) assert.equal(err.param, param, `param: ${JSON.stringify(err)}`);
  if (messageIncludes !== undefined) {
    if (typeof messageIncludes === 'string') assert.ok(err.message.includes(messageIncludes), `message '${err.message}' should mention '${messageIncludes}'`);
    else assert.match(err.message, messageIncludes);
  }
}

function config(overrides: Record<string, unknown>) {
  return ConfigSchema.parse({ port: 0, host: '127.0.0.1', cacheDir: tempDir(), dataDir: tempDir(), maxRows: 8, maxContext: 64, threads: 1, ...overrides });
}

describe('HTTP server on the PEFT fixture', () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer(
      config({
        model: path.join(FIXTURE, 'base'),
        modelName: BASE,
        maxBodyBytes: MAX_BODY,
        delta: [`lora_all_r8=${LORA_DIR}`, `lora_copy=${LORA_DIR}`],
      }),
    );
    await server.ready;
  });
  after(() => server?.close());

  it('liveness and readiness answer 200 once ready', async () => {
    const live = await fetch(`${server.url}/health/live`);
    assert.equal(live.status, 200);
    const ready = await fetch(`${server.url}/health/ready`);
    assert.equal(ready.status, 200);
    assert.equal((await ready.json()).model, BASE);
  });

  it('/v1/models lists the base (no parent) and each delta with the base as parent', async () => {
    const res = await fetch(`${server.url}/v1/models`);
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.object, 'list');
    const byId = new Map<string, Json>(body.data.map((m: Json) => [m.id, m]));
    assert.deepEqual([...byId.keys()].sort(), [BASE, 'lora_all_r8', 'lora_copy'].sort());
    assert.equal(byId.get(BASE).parent, null);
    assert.equal(byId.get('lora_all_r8').parent, BASE);
    assert.equal(byId.get('lora_copy').parent, BASE);
    for (const m of body.data) assert.equal(m.object, 'model');
  });

  for (const [label, model, expected] of [['base', BASE, ref.base], ['lora_all_r8', 'lora_all_r8', ref.lora_all_r8]] as const) {
    it(`${label}: echoed prompt logprobs match PyTorch within 1e-4`, async () => {
      for (let row = 0; row < ref.input_ids.length; row++) {
        const ids = ref.input_ids[row]!;
        const body = await complete(server, { model, prompt: ids, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
        const lp = body.choices[0].logprobs;
        assert.ok(lp, 'logprobs block missing');
        assert.equal(lp.token_logprobs.length, ids.length);
        assert.equal(lp.tokens.length, ids.length);
        assert.equal(lp.token_logprobs[0], null);
        for (let i = 1; i < ids.length; i++) {
          const want = logSoftmax(expected.logits[row]![i - 1]!)[ids[i]!]!;
          const got = lp.token_logprobs[i];
          assert.ok(Math.abs(got - want) <= 1e-4, `row ${row} pos ${i}: got ${got}, want ${want}`);
        }
        assert.equal(body.usage.completion_tokens, 0);
        assert.equal(body.usage.prompt_tokens, ids.length);
      }
    });

    it(`${label}: greedy 12-token continuations equal PyTorch's`, async () => {
      for (let row = 0; row < ref.input_ids.length; row++) {
        const ids = ref.input_ids[row]!;
        const body = await complete(server, greedy(model, ids));
        assert.deepEqual(body.choices[0].token_ids, expected.greedy_12[row]);
        assert.deepEqual(body.choices[0].prompt_token_ids, ids);
        assert.deepEqual(body.prompt_token_ids, ids);
        assert.equal(body.choices[0].finish_reason, 'length');
        assert.equal(body.model, model);
      }
    });
  }

  it('a mixed batch of base and deltas gives each request what it gets alone', async () => {
    const models = [BASE, 'lora_all_r8', 'lora_copy'];
    const requests = [0, 1, 2, 3, 4, 5].map((k) => greedy(models[k % 3]!, ref.input_ids[Math.floor(k / 3)]!));
    const alone: Json[] = [];
    for (const r of requests) alone.push(await complete(server, r));
    const together = await Promise.all(requests.map((r) => complete(server, r)));
    requests.forEach((r, k) => {
      assert.deepEqual(together[k].choices[0].token_ids, alone[k].choices[0].token_ids, `request ${k} (${r.model})`);
      assert.equal(together[k].choices[0].text, alone[k].choices[0].text, `request ${k} (${r.model})`);
      const expected = r.model === BASE ? ref.base : ref.lora_all_r8;
      assert.deepEqual(together[k].choices[0].token_ids, expected.greedy_12[Math.floor(k / 3)], `request ${k} (${r.model})`);
    });
  });

  it('string prompts are tokenised as the reference tokenizer does', async () => {
    for (const sample of ref.tokenizer_samples) {
      const body = await complete(server, { model: BASE, prompt: sample.text, max_tokens: 1, temperature: 0, return_token_ids: true });
      assert.deepEqual(body.choices[0].prompt_token_ids, sample.ids, `'${sample.text}'`);
      assert.equal(body.usage.prompt_tokens, sample.ids.length);
    }
  });

  it('the same seed at temperature 0.8 gives identical outputs', async () => {
    const req = { model: 'lora_all_r8', prompt: ref.input_ids[0], max_tokens: 12, temperature: 0.8, seed: 1234, return_token_ids: true };
    const a = await complete(server, req);
    const b = await complete(server, req);
    assert.equal(a.choices[0].token_ids.length, 12);
    assert.deepEqual(a.choices[0].token_ids, b.choices[0].token_ids);
    assert.equal(a.choices[0].text, b.choices[0].text);
  });

  it('a subnormal temperature with top_p is greedy, and the server goes on serving', async () => {
    // temperature 1.5e-323 with top_p 0.87 once sampled an undefined token that stopped the decode loop for every request.
    const tiny = await complete(server, greedy('lora_all_r8', ref.input_ids[0], { temperature: 1.5e-323, top_p: 0.87, top_k: 18 }));
    assert.deepEqual(tiny.choices[0].token_ids, ref.lora_all_r8.greedy_12[0]);
    assert.deepEqual((await complete(server, greedy(BASE, ref.input_ids[0]))).choices[0].token_ids, ref.base.greedy_12[0]);
  });

  it('n=2 gives two choices with indices 0 and 1, and usage counts add up', async () => {
    const body = await complete(server, { model: BASE, prompt: ref.input_ids[1], max_tokens: 5, temperature: 0.8, seed: 7, n: 2, return_token_ids: true });
    assert.equal(body.choices.length, 2);
    assert.deepEqual(body.choices.map((c: Json) => c.index).sort(), [0, 1]);
    for (const c of body.choices) {
      assert.equal(c.token_ids.length, 5);
      assert.equal(c.finish_reason, 'length');
    }
    assert.equal(body.usage.prompt_tokens, 8);
    assert.equal(body.usage.completion_tokens, 10);
    assert.equal(body.usage.total_tokens, 18);

    const single = await complete(server, greedy(BASE, ref.input_ids[0]));
    assert.deepEqual(single.usage, { prompt_tokens: 8, completion_tokens: 12, total_tokens: 20 });
  });

  it('a stop string cuts the text before it with finish_reason stop', async () => {
    // Pick the row whose greedy text has the most room for a stop string from its middle.
    const runs = await Promise.all(ref.input_ids.map((ids) => complete(server, greedy(BASE, ids))));
    const full = runs.map((r) => r.choices[0].text as string).reduce((a, b) => (b.length > a.length ? b : a));
    const row = runs.findIndex((r) => r.choices[0].text === full);
    assert.ok(full.length >= 4, `greedy text too short to pick a stop from: ${JSON.stringify(full)}`);
    const mid = Math.floor(full.length / 2);
    const stop = full.slice(mid, mid + 2);
    const expected = full.slice(0, full.indexOf(stop));
    const body = await complete(server, greedy(BASE, ref.input_ids[row]!, { stop }));
    assert.equal(body.choices[0].text, expected);
    assert.equal(body.choices[0].finish_reason, 'stop');
    assert.ok(!body.choices[0].text.includes(stop));
  });

  it('streaming returns SSE chunks whose text and token ids equal the non-streamed result', async () => {
    for (const model of [BASE, 'lora_all_r8']) {
      const ids = ref.input_ids[1]!;
      const plain = await complete(server, greedy(model, ids));
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(greedy(model, ids, { stream: true })) });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
      const raw = await res.text();
      const events = raw.split(/\r?\n\r?\n/).map((e) => e.trim()).filter(Boolean);
      for (const e of events) assert.match(e, /^data: /, `not a data event: ${e}`);
      const payloads = events.map((e) => e.slice('data: '.length));
      assert.equal(payloads.at(-1), '[DONE]');
      const chunks = payloads.slice(0, -1).map((p) => JSON.parse(p));
      assert.ok(chunks.length >= 2, 'expected several chunks');
      let text = '';
      const tokenIds: number[] = [];
      let finish: string | null = null;
      for (const chunk of chunks) {
        assert.equal(chunk.object, 'text_completion');
        assert.equal(chunk.model, model);
        assert.equal(chunk.choices.length, 1);
        assert.equal(chunk.choices[0].index, 0);
        assert.equal(finish, null, 'a chunk arrived after the finishing one');
        text += chunk.choices[0].text;
        tokenIds.push(...chunk.choices[0].token_ids);
        finish = chunk.choices[0].finish_reason;
      }
      assert.equal(finish, 'length');
      assert.equal(text, plain.choices[0].text);
      assert.deepEqual(tokenIds, plain.choices[0].token_ids);
      assert.deepEqual(tokenIds, (model === BASE ? ref.base : ref.lora_all_r8).greedy_12[1]);
    }
  });

  it('streamed chunks carry token_ids only when return_token_ids is set, as whole responses do', async () => {
    const chunks = async (extra: Record<string, unknown>, route = '/v1/completions') => {
      const body = route === '/v1/completions' ? { model: BASE, prompt: ref.input_ids[0]!, max_tokens: 3, temperature: 0, stream: true, ...extra } : { model: BASE, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, temperature: 0, stream: true, ...extra };
      const res = await fetch(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const text = await res.text();
      return text.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)) as Json).filter((c) => c.choices.length);
    };
    for (const route of ['/v1/completions', '/v1/chat/completions']) {
      if (route !== '/v1/completions' && !fs.existsSync(path.join(FIXTURE, 'base', 'tokenizer.json'))) continue;
      const plain = await chunks({}, route);
      assert.ok(plain.length > 0 && plain.every((c) => !('token_ids' in c.choices[0])), `${route}: ${JSON.stringify(plain[0])}`);
      const withIds = (await chunks({ return_token_ids: true }, route)).filter((c) => c.choices[0].token_ids?.length);
      assert.ok(withIds.length > 0, `${route}: no token_ids with return_token_ids`);
    }
  });

  describe('bad input is a 4xx naming the field, and the server keeps serving', () => {
    const ids = ref.input_ids[0]!;

    it('unknown model is 404 naming model', async () => {
      assertError(await post(server, greedy('no-such-model', ids)), 404, 'model', 'no-such-model');
    });

    it('malformed JSON is 400', async () => {
      assertError(await post(server, '{"model": "tiny-llama", "prompt": [1, 2'), 400, null, /JSON/);
    });

    it('wrong types are 400 naming the field', async () => {
      assertError(await post(server, greedy(BASE, ids, { max_tokens: 'x' })), 400, 'max_tokens', 'max_tokens');
      assertError(await post(server, greedy(BASE, ids, { temperature: -1 })), 400, 'temperature', 'temperature');
      assertError(await post(server, { prompt: ids }), 400, 'model', 'model');
      assertError(await post(server, greedy(BASE, ids, { n: 0 })), 400, 'n', 'n');
    });

    it('max_tokens 0 without echo is 400 naming max_tokens', async () => {
      assertError(await post(server, { model: BASE, prompt: ids, max_tokens: 0 }), 400, 'max_tokens', 'max_tokens');
    });

    it('a prompt that does not fit the context is 400', async () => {
      const long = Array.from({ length: 64 }, (_, i) => (i * 7) % 500);
      assertError(await post(server, greedy(BASE, long)), 400, 'prompt');
      // A prompt that fits but leaves no room for max_tokens.
      assertError(await post(server, greedy(BASE, long.slice(0, 60))), 400, 'max_tokens', 'max_tokens');
    });

    it('a token id outside the vocabulary is 400 naming prompt', async () => {
      assertError(await post(server, greedy(BASE, [1, 2, 512])), 400, 'prompt', '512');
      const negative = await post(server, greedy(BASE, [1, -3]));
      assertError(negative, 400);
      assert.match(negative.json.error.param, /^prompt\b/);
    });

    it('an empty prompt is 400 naming prompt', async () => {
      assertError(await post(server, greedy(BASE, '')), 400, 'prompt', 'prompt');
      assertError(await post(server, greedy(BASE, [])), 400, 'prompt', 'prompt');
    });

    it('an oversized body is 413, declared or streamed', async () => {
      const big = JSON.stringify(greedy(BASE, ids, { user: 'x'.repeat(MAX_BODY) }));
      assertError(await post(server, big), 413);
      // No content-length: the cap applies while reading.
      const chunked = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(big));
          controller.close();
        },
      });
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chunked, duplex: 'half' } as RequestInit);
      assertError({ status: res.status, json: await res.json() }, 413);
    });

    it('an unknown route is 404 with an error body', async () => {
      const res = await fetch(`${server.url}/v1/nope`);
      assertError({ status: res.status, json: await res.json() }, 404);
    });

    it('a route used with the wrong method is 405 with Allow', async () => {
      for (const [method, route, allow] of [['GET', '/v1/completions', 'POST'], ['DELETE', '/v1/chat/completions', 'POST'], ['POST', '/health/ready', 'GET, HEAD']] as const) {
        const res = await fetch(`${server.url}${route}`, { method });
        assertError({ status: res.status, json: await res.json() }, 405, null, method);
        assert.equal(res.headers.get('allow'), allow, `${method} ${route}`);
      }
    });

    it('type errors say what type was expected', async () => {
      assertError(await post(server, greedy(BASE, ids, { max_tokens: 'ten' })), 400, 'max_tokens', /expected (a )?number/i);
      assertError(await post(server, greedy(BASE, ids, { stream: 'yes' })), 400, 'stream', /expected (a )?boolean/i);
    });

    it('still serves correct completions afterwards', async () => {
      const body = await complete(server, greedy('lora_copy', ref.input_ids[1]!));
      assert.deepEqual(body.choices[0].token_ids, ref.lora_all_r8.greedy_12[1]);
      const live = await fetch(`${server.url}/health/ready`);
      assert.equal(live.status, 200);
    });
  });
});

describe('HTTP server whose model directory is broken', () => {
  let server: RunningServer;
  let dir: string;
  before(async () => {
    // A model directory with its config but no weights.
    dir = path.join(tempDir(), 'broken');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(FIXTURE, 'base', 'config.json'), path.join(dir, 'config.json'));
    server = await startServer(config({ model: dir }));
  });
  after(() => server?.close());

  it('ready rejects naming the problem and /health/ready stays 503 while /health/live is 200', async () => {
    await assert.rejects(server.ready, (err: Error) => {
      assert.match(err.message, /no model\.safetensors/);
      return true;
    });
    const ready = await fetch(`${server.url}/health/ready`);
    assert.equal(ready.status, 503);
    assert.ok((await ready.json()).error);
    const live = await fetch(`${server.url}/health/live`);
    assert.equal(live.status, 200);
    const res = await post(server, { model: 'broken', prompt: [1, 2], max_tokens: 1 });
    assertError(res, 503);
  });

  it('/v1/models names the base by its directory basename', async () => {
    const body = await (await fetch(`${server.url}/v1/models`)).json();
    assert.equal(body.data[0].id, 'broken');
    assert.equal(body.data[0].parent, null);
  });
});
