import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE = 'tiny-llama';
const LORA = 'lora_all_r8';
const messages = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'What is LoRA?' },
];

async function post(server: RunningServer, route: string, body: unknown, signal?: AbortSignal) {
  return fetch(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
}

async function json(server: RunningServer, route: string, body: unknown): Promise<{ status: number; body: Json; headers: Headers }> {
  const res = await post(server, route, body);
  return { status: res.status, body: await res.json(), headers: res.headers };
}

/** The `data:` payloads of an SSE body, [DONE] included. */
async function sse(res: Response): Promise<string[]> {
  const text = await res.text();
  return text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
}

function serverConfig(overrides: Record<string, unknown> = {}) {
  return ConfigSchema.parse({
    port: 0,
    host: '127.0.0.1',
    cacheDir: tempDir(),
    dataDir: tempDir(),
    model: path.join(FIXTURE, 'base'),
    modelName: BASE,
    maxContext: 128,
    threads: 1,
    delta: [`${LORA}=${path.join(FIXTURE, 'lora_all_r8')}`],
    ...overrides,
  });
}

describe('chat completions, OpenAPI, disconnects and back-pressure', () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer(serverConfig());
    await server.ready;
  });
  after(() => server.close());

  for (const model of [BASE, LORA]) {
    it(`${model}: a chat equals a completion of the rendered template, streamed or not`, async () => {
      const chat = await json(server, '/v1/chat/completions', { model, messages, max_completion_tokens: 10, temperature: 0, return_token_ids: true });
      assert.equal(chat.status, 200, JSON.stringify(chat.body));
      assert.equal(chat.body.object, 'chat.completion');
      assert.equal(chat.body.choices[0].message.role, 'assistant');
      const rendered = '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is LoRA?<|im_end|>\n<|im_start|>assistant\n';
      const completion = await json(server, '/v1/completions', { model, prompt: rendered, max_tokens: 10, temperature: 0, return_token_ids: true });
      assert.deepEqual(chat.body.prompt_token_ids, completion.body.prompt_token_ids);
      assert.deepEqual(chat.body.choices[0].token_ids, completion.body.choices[0].token_ids);
      assert.equal(chat.body.choices[0].message.content, completion.body.choices[0].text);
      assert.equal(chat.body.usage.completion_tokens, chat.body.choices[0].token_ids.length);

      const streamed = await sse(await post(server, '/v1/chat/completions', { model, messages, max_completion_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } }));
      assert.equal(streamed.at(-1), '[DONE]');
      const chunks = streamed.slice(0, -1).map((d) => JSON.parse(d));
      assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
      const text = chunks.flatMap((c) => c.choices.map((ch: Json) => ch.delta?.content ?? '')).join('');
      assert.equal(text, chat.body.choices[0].message.content);
      const usage = chunks.at(-1);
      assert.deepEqual(usage.choices, []);
      assert.deepEqual(usage.usage, chat.body.usage);
    });
  }

  it('chat logprobs report each token with its top alternatives', async () => {
    const res = await json(server, '/v1/chat/completions', { model: BASE, messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3 });
    assert.equal(res.status, 200);
    const content = res.body.choices[0].logprobs.content;
    assert.equal(content.length, 4);
    for (const entry of content) {
      assert.equal(entry.top_logprobs.length, 3);
      // greedy: the chosen token is the most likely one
      assert.ok(Math.abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-9);
      assert.ok(entry.logprob <= 0);
    }
  });

  it('bad chat requests are 400s naming the field', async () => {
    for (const [body, param] of [
      [{ model: BASE, messages: [] }, 'messages'],
      [{ model: BASE, messages: [{ role: 'wizard', content: 'hi' }] }, 'messages.0.role'],
      [{ model: BASE, messages, top_logprobs: 2 }, 'top_logprobs'],
      [{ model: BASE, messages, max_completion_tokens: 0 }, 'max_completion_tokens'],
      [{ model: BASE, messages, max_completion_tokens: 500 }, 'max_completion_tokens'],
    ] as const) {
      const res = await json(server, '/v1/chat/completions', body);
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(res.body.error.param, param, JSON.stringify(res.body));
    }
    const unknown = await json(server, '/v1/chat/completions', { model: 'nope', messages });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.param, 'model');
  });

  it('GET /openapi.json describes the endpoints with the request schemas', async () => {
    const doc = await (await fetch(`${server.url}/openapi.json`)).json();
    assert.equal(doc.openapi, '3.1.0');
    assert.ok(doc.paths['/v1/completions'].post && doc.paths['/v1/chat/completions'].post && doc.paths['/v1/models'].get);
    const completion = doc.components.schemas.CompletionRequest;
    assert.deepEqual([...completion.required].sort(), ['model', 'prompt']);
    assert.deepEqual(completion.properties.temperature.anyOf, [{ type: 'number', minimum: 0, maximum: 2 }, { type: 'null' }]);
    assert.ok(doc.components.schemas.ChatCompletionRequest.properties.messages);
  });

  it('a streaming client that disconnects frees its row at the next step', async () => {
    const abort = new AbortController();
    const res = await post(server, '/v1/completions', { model: BASE, prompt: [1, 2, 3], max_tokens: 120, temperature: 0, stream: true }, abort.signal);
    const reader = res.body!.getReader();
    await reader.read(); // the first chunk exists, so the sequence is running
    assert.equal((await server.state.engine!.stats()).running, 1);
    abort.abort();
    let running = 1;
    for (let i = 0; i < 100 && running > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      running = (await server.state.engine!.stats()).running;
    }
    assert.equal(running, 0, 'the row was not freed');
  });
});

describe('back-pressure', () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer(serverConfig({ maxRows: 1, maxQueue: 1 }));
    await server.ready;
  });
  after(() => server.close());

  it('a full queue answers 429 with Retry-After, and the others complete', async () => {
    const results = await Promise.all(Array.from({ length: 5 }, () => json(server, '/v1/completions', { model: BASE, prompt: [1, 2, 3], max_tokens: 40, temperature: 0 })));
    const refused = results.filter((r) => r.status === 429);
    assert.ok(refused.length >= 1, `statuses: ${results.map((r) => r.status)}`);
    for (const r of refused) {
      assert.equal(r.headers.get('retry-after'), '1');
      assert.equal(r.body.error.code, 'queue_full');
    }
    assert.ok(results.every((r) => r.status === 200 || r.status === 429));
    assert.ok(results.filter((r) => r.status === 200).length >= 2);
  });
});
