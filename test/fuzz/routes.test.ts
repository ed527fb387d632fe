/**
 * Every JSON route of one real server under fuzzed bodies, paths, queries and headers, through
 * HTTP: each request finishes, is answered below 500, and a refusal is OpenAI's error shape.
 * Afterwards the server is as the test left it on purpose: ready, generating the same greedy
 * tokens, no staging leftovers, the deltas it uploaded and no others, a fine-tuning job for each
 * 201 and no other, and the process's memory bounded.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { loadReference } from '../helpers.js';
import { FIXTURE_CONFIG_TEXT, FIXTURE_WEIGHTS } from './generators.js';
import { assertNoLeftovers, authorization, bearer, deltaVersions, KEYS, MODEL, reached, send, startFuzzServer, statusesDuring, tenantHeader, type FuzzServer, type Probe } from './server.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();

// CI-sized: 9,900 requests, about a minute on two cores.
const RUNS = { completions: 1500, chat: 1200, fineTuning: 800, wild: 2000, raw: 1200, paths: 2000, headers: 1200 };

const COMPLETIONS = '/v1/completions';
const CHAT = '/v1/chat/completions';
const JOBS = '/admin/v1/fine_tuning/jobs';
const JSON_ROUTES = [COMPLETIONS, CHAT, JOBS] as const;
/** Models a request may name: the base, the deltas uploaded below (by plain, owner and version ids), stacks, strangers. */
const MODELS = [MODEL, 'mine', 'acme/mine', 'mine@1', 'mine@2', 'admin/pub', 'pub', `${MODEL}+mine`, 'mine+admin/pub', 'globex/mine', 'nope', 'mine@0', '', ' mine'];
/** Mostly models that resolve, so most bodies get past resolution to planning and generation. */
const model = fc.oneof({ arbitrary: fc.constantFrom(...MODELS.slice(0, 8)), weight: 4 }, { arbitrary: fc.constantFrom(...MODELS), weight: 1 });

const json = (v: unknown) => JSON.stringify(v) ?? 'null';
const post = (path: string, body: string | Uint8Array, headers: Record<string, string> = {}): Probe => ({ method: 'POST', path, body, headers: { ...bearer(KEYS.acme), 'content-type': 'application/json', ...headers } });

// Field values of the wrong type or out of range: any JSON, numbers at the edges, long strings.
const wild = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(-1, 0, 1, 2 ** 31, 2 ** 53 + 2, -(2 ** 53), 1e300, -1e300, 5e-324, 0.5, 65, 1e6, '', 'auto', 'all-linear', true, null, [], {}),
  fc.string({ maxLength: 1000 }),
  fc.constantFrom('x'.repeat(5000), ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']),
);

/** One field set to a wild value, dropped, or an unknown field added. */
function mutateOne<T extends Record<string, unknown>>(base: fc.Arbitrary<T>, fields: readonly string[]): fc.Arbitrary<Record<string, unknown>> {
  const field = fc.oneof({ arbitrary: fc.constantFrom(...fields), weight: 8 }, { arbitrary: fc.string({ maxLength: 10 }), weight: 1 });
  return fc.tuple(base, field, wild, fc.boolean()).map(([body, f, value, drop]) => {
    const out: Record<string, unknown> = { ...body };
    if (drop) delete out[f];
    else out[f] = value;
    return out;
  });
}

/** Keeps an otherwise fuzzed generation cheap: at most 4 new tokens per choice and 2 choices. */
function cheap(body: Record<string, unknown>): Record<string, unknown> {
  const out = { ...body };
  for (const f of ['max_tokens', 'max_completion_tokens']) if (typeof out[f] === 'number' && (out[f] as number) > 4) out[f] = 4;
  if (out['max_tokens'] === undefined || out['max_tokens'] === null) out['max_tokens'] = 4;
  if (typeof out['n'] === 'number' && (out['n'] as number) > 2) out['n'] = 2;
  return out;
}

const SAMPLING = {
  model,
  n: fc.integer({ min: 1, max: 2 }),
  temperature: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 2, noNaN: true })),
  top_p: fc.double({ min: 0.01, max: 1, noNaN: true }),
  top_k: fc.integer({ min: -1, max: 50 }),
  seed: fc.integer(),
  stop: fc.oneof(fc.string({ maxLength: 4 }), fc.array(fc.string({ maxLength: 4 }), { maxLength: 3 })),
  stream: fc.boolean(),
  stream_options: fc.record({ include_usage: fc.boolean() }),
  return_token_ids: fc.boolean(),
  delta_ids: fc.oneof({ arbitrary: fc.constant([]), weight: 3 }, { arbitrary: fc.array(fc.constantFrom(...MODELS), { maxLength: 2 }), weight: 1 }),
  user: fc.string({ maxLength: 8 }),
};

// Now and then just past the vocabulary.
const tokenIds = (vocab: number) => fc.array(fc.oneof({ arbitrary: fc.integer({ min: 0, max: vocab - 1 }), weight: 50 }, { arbitrary: fc.integer({ min: vocab, max: vocab + 2 }), weight: 1 }), { minLength: 1, maxLength: 8 });
const completionBody = (vocab: number) =>
  fc.record(
    {
      ...SAMPLING,
      prompt: fc.oneof(fc.string({ minLength: 1, maxLength: 40 }), tokenIds(vocab), fc.array(fc.string({ maxLength: 12 }), { minLength: 1, maxLength: 3 }), fc.array(tokenIds(vocab), { minLength: 1, maxLength: 3 })),
      max_tokens: fc.integer({ min: 1, max: 4 }),
      echo: fc.boolean(),
      logprobs: fc.integer({ min: 0, max: 5 }),
    },
    { requiredKeys: ['model', 'prompt'] },
  );
const message = fc.record(
  {
    role: fc.constantFrom('system', 'developer', 'user', 'assistant', 'tool'),
    content: fc.oneof(fc.string({ maxLength: 30 }), fc.array(fc.record({ type: fc.constant('text'), text: fc.string({ maxLength: 12 }) }), { maxLength: 2 }), fc.constant(null)),
    name: fc.string({ maxLength: 6 }),
  },
  { requiredKeys: ['role'] },
);
const chatBody = fc.record(
  {
    ...SAMPLING,
    messages: fc.array(message, { minLength: 1, maxLength: 3 }),
    max_tokens: fc.integer({ min: 1, max: 4 }),
    max_completion_tokens: fc.integer({ min: 1, max: 4 }),
    logprobs: fc.boolean(),
    top_logprobs: fc.integer({ min: 0, max: 5 }),
  },
  { requiredKeys: ['model', 'messages'] },
);
const COMPLETION_FIELDS = ['model', 'prompt', 'max_tokens', 'n', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'stream_options', 'return_token_ids', 'delta_ids', 'user', 'echo', 'logprobs'];
const CHAT_FIELDS = [...COMPLETION_FIELDS.filter((f) => f !== 'prompt' && f !== 'echo'), 'messages', 'max_completion_tokens', 'top_logprobs'];

const fineTuningBody = (fileId: string) =>
  fc.record(
    {
      model: fc.constantFrom(MODEL, 'mine', 'acme/mine', 'admin/pub', 'nope'),
      training_file: fc.constantFrom(fileId, 'file-nope'),
      validation_file: fc.constantFrom(fileId, null),
      tenant: fc.constantFrom('acme', 'globex', 'admin'),
      suffix: fc.constantFrom('s', 'x-1'),
      name: fc.constantFrom('ft-a', 'ft-b'),
      method: fc.record({ type: fc.constant('lora'), lora: fc.record({ r: fc.integer({ min: 1, max: 8 }), alpha: fc.integer({ min: 1, max: 32 }), target_modules: fc.constantFrom('all-linear', ['q_proj'], ['v_proj', 'o_proj']), use_rslora: fc.boolean() }, { requiredKeys: [] }) }),
      hyperparameters: fc.record({ max_steps: fc.integer({ min: 1, max: 2 }), batch_size: fc.constantFrom(1, 2, 'auto'), learning_rate: fc.constantFrom(1e-3, 0.1), lr_scheduler: fc.constantFrom('constant', 'linear', 'cosine'), warmup_steps: fc.nat(2) }, { requiredKeys: [] }),
      seed: fc.nat(),
    },
    { requiredKeys: ['model', 'training_file'] },
  );
const FINE_TUNING_FIELDS = ['model', 'training_file', 'validation_file', 'tenant', 'suffix', 'name', 'method', 'hyperparameters', 'seed'];

/** Bodies no client library would send: bytes, broken and truncated JSON, deep nesting, numbers only text can spell. */
const rawBody = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.string({ maxLength: 200 }),
  fc.tuple(fc.constantFrom(json({ model: MODEL, prompt: 'hello', max_tokens: 2 }), json({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 })), fc.nat()).map(([t, n]) => t.slice(0, n % t.length)),
  fc.constantFrom(10, 1000, 100_000).chain((depth) => fc.constantFrom('prompt', 'messages', 'model', 'stop', 'hyperparameters').map((f) => `{"model":"${MODEL}","${f}":${'['.repeat(depth)}${']'.repeat(depth)}}`)),
  fc.constantFrom(10, 1000, 50_000).map((depth) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`),
  fc.tuple(fc.constantFrom('max_tokens', 'n', 'temperature', 'top_p', 'top_k', 'seed', 'logprobs', 'top_logprobs', 'max_completion_tokens'), fc.constantFrom('1e400', '-1e400', '-0', '1e308', '9007199254740993', '4.0', '1E1', '0.0000001', '123456789012345678901234567890'))
    .map(([f, v]) => `{"model":"${MODEL}","prompt":[1,2],"messages":[{"role":"user","content":"x"}],"max_tokens":2,"${f}":${v}}`),
  fc.constantFrom('', 'null', '[]', '"x"', '{}', '{"model":null}', '\ufeff{}', '{"__proto__":{"model":"x"}}', '{"constructor":{"prototype":{}}}', '{"model":"a","model":"b"}'),
);

/** Path segments: encoded unicode, the characters references use, percent-escapes valid and not, long ones. */
const segment = fc.oneof(
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
  fc.constantFrom('mine', 'acme/mine', 'mine@1', 'mine@0', 'mine@01', 'mine@9007199254740993', 'admin/pub', 'globex/mine', 'a/b/c', '..', '.', '%', '%zz', '%2F', '%2e%2e', '%00', '%ff', '%C0%AF', '@', '@1', '__proto__', 'constructor', 'mine@1@2', ' ', '%20mine'),
  fc.array(fc.constantFrom('a', '.', '/', '@', '%', '-', '_', '1', '%2F', '%40'), { maxLength: 12 }).map((p) => p.join('')),
  fc.constantFrom('a'.repeat(1000), `${'%41'.repeat(300)}`),
);
const query = fc.array(fc.tuple(fc.constantFrom('limit', 'after', 'stream', 'x'), fc.oneof(fc.constantFrom('1', '100', '101', '0', '-1', '1.5', '1e2', 'NaN', '', ' 5', '0x10'), fc.string({ maxLength: 12 }))), { maxLength: 3 })
  .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&')}` : ''));

const pathProbe = fc.oneof(
  segment.map((s): Probe => ({ method: 'GET', path: `/v1/deltas/${s}` })),
  fc.tuple(segment, segment).map(([s, f]): Probe => ({ method: 'GET', path: `/v1/deltas/${s}/files/${f}` })),
  fc.tuple(segment, fc.constantFrom('adapter_config.json', 'adapter_model.safetensors')).map(([s, f]): Probe => ({ method: 'GET', path: `/v1/deltas/${s}/files/${f}` })),
  fc.tuple(fc.constantFrom('POST', 'DELETE'), segment, fc.constantFrom('/pin', '/prefetch', '')).map(([m, s, a]): Probe => ({ method: m, path: `/admin/v1/deltas/${s}${a}` })),
  fc.tuple(segment, query).map(([s, q]): Probe => ({ method: 'GET', path: `${JOBS}/${s}${q}` })),
  fc.tuple(segment, fc.constantFrom('/events', '/cancel'), query).map(([s, a, q]): Probe => ({ method: a === '/cancel' ? 'POST' : 'GET', path: `${JOBS}/${s}${a}${q}` })),
  query.map((q): Probe => ({ method: 'GET', path: `${JOBS}${q}` })),
  fc.tuple(segment, fc.constantFrom('', '/content')).map(([s, a]): Probe => ({ method: 'GET', path: `/admin/v1/files/${s}${a}` })),
  fc.tuple(fc.constantFrom('/v1/models', '/v1/deltas', '/admin/v1/files', '/health/ready', '/v1', '/v2/x', '/admin'), query).map(([p, q]): Probe => ({ method: 'GET', path: `${p}${q}` })),
);

describe('fuzz: JSON routes through HTTP', () => {
  let s: FuzzServer;
  let vocab: number;
  let fileId: string;
  let rssBefore: number;
  let deltasBefore: Record<string, Record<string, number[]>>;
  /** Greedy tokens of the base and of a delta before any fuzzing: the server must still produce them after. */
  let greedyBefore: number[][];
  /** Every job the fuzzer's bodies created (201), by id. */
  const created = new Map<string, Json>();

  const greedy = async () => {
    const out: number[][] = [];
    for (const model of [MODEL, 'mine']) {
      const res = await send(s.url, post(COMPLETIONS, json({ model, prompt: ref.input_ids[0], max_tokens: 12, temperature: 0, return_token_ids: true })));
      assert.equal(res.status, 200, res.text);
      out.push(res.json.choices[0].token_ids);
    }
    return out;
  };
  const snapshot = async () => ({ acme: await deltaVersions(s.url, KEYS.acme), globex: await deltaVersions(s.url, KEYS.globex), admin: await deltaVersions(s.url, KEYS.admin) });

  before(async () => {
    s = await startFuzzServer();
    vocab = s.server.state.engine!.info.vocabSize;
    // What the fuzzer may find on purpose: acme's delta (two versions), a public delta, a training file.
    const upload = async (key: string, name: string, extra: Record<string, string> = {}) => {
      const form = new FormData();
      form.set('name', name);
      for (const [k, v] of Object.entries(extra)) form.set(k, v);
      form.set('adapter_config', new Blob([FIXTURE_CONFIG_TEXT]), 'adapter_config.json');
      form.set('adapter_model', new Blob([FIXTURE_WEIGHTS as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
      const res = await send(s.url, { method: 'POST', path: '/v1/deltas', body: form, headers: bearer(key) });
      assert.equal(res.status, 201, res.text);
    };
    await upload(KEYS.acme, 'mine');
    await upload(KEYS.acme, 'mine');
    await upload(KEYS.admin, 'pub', { public: 'true' });
    const file = new FormData();
    file.set('purpose', 'fine-tune');
    file.set('file', new Blob([[{ prompt: 'hello', completion: ' world' }, { input_ids: [1, 2, 3, 4] }].map((l) => json(l)).join('\n')]), 'task.jsonl');
    const stored = await send(s.url, { method: 'POST', path: '/admin/v1/files', body: file, headers: bearer(KEYS.admin) });
    assert.equal(stored.status, 201, stored.text);
    fileId = stored.json.id;
    greedyBefore = await greedy();
    assert.deepEqual(greedyBefore, [ref.base.greedy_12[0], ref.lora_all_r8.greedy_12[0]]);
    deltasBefore = await snapshot();
    rssBefore = process.memoryUsage().rss;
  });
  after(() => s.server.close());

  /** Sends a fuzzed job body; a job it creates is recorded and cancelled at once, so none trains for long. */
  const sendJob = async (probe: Probe) => {
    const res = await send(s.url, probe);
    if (res.status === 201) {
      created.set(res.json.id, res.json);
      const cancel = await send(s.url, { method: 'POST', path: `${JOBS}/${res.json.id}/cancel`, headers: bearer(KEYS.admin) });
      assert.ok(cancel.status === 200 || cancel.status === 409, cancel.text);
    }
    return res;
  };
  const sendAny = (probe: Probe) => (probe.path === JOBS && probe.method === 'POST' ? sendJob(probe) : send(s.url, probe));

  it(`completions: valid bodies with one field mutated, generations capped (${RUNS.completions} cases)`, async () => {
    const body = mutateOne(completionBody(vocab), COMPLETION_FIELDS);
    const key = fc.constantFrom(KEYS.acme, KEYS.acme, KEYS.globex);
    reached(await statusesDuring(() => fc.assert(fc.asyncProperty(body, key, async (b, k) => void (await send(s.url, post(COMPLETIONS, json(cheap(b)), bearer(k))))), { numRuns: RUNS.completions })), [200, 400, 404]);
  });

  it(`chat completions: valid bodies with one field mutated, generations capped (${RUNS.chat} cases)`, async () => {
    const body = mutateOne(chatBody, CHAT_FIELDS);
    reached(await statusesDuring(() => fc.assert(fc.asyncProperty(body, async (b) => void (await send(s.url, post(CHAT, json(cheap(b)))))), { numRuns: RUNS.chat })), [200, 400]);
  });

  it(`fine-tuning jobs: valid bodies with one field mutated; every 201 recorded (${RUNS.fineTuning} cases)`, async () => {
    const body = mutateOne(fineTuningBody(fileId), FINE_TUNING_FIELDS);
    reached(await statusesDuring(() => fc.assert(fc.asyncProperty(body, async (b) => void (await sendJob(post(JOBS, json(b), bearer(KEYS.admin))))), { numRuns: RUNS.fineTuning })), [201, 400]);
  });

  it(`wild JSON bodies on every JSON route, uncapped (${RUNS.wild} cases)`, async () => {
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 4 }),
      fc.dictionary(fc.constantFrom(...COMPLETION_FIELDS, ...CHAT_FIELDS, ...FINE_TUNING_FIELDS), wild, { maxKeys: 6 }),
      fc.record({ model: model, prompt: wild, messages: wild }, { requiredKeys: ['model'] }),
    );
    const property = fc.asyncProperty(fc.constantFrom(...JSON_ROUTES), body, fc.constantFrom(KEYS.acme, KEYS.admin), async (route, b, key) => void (await sendAny(post(route, json(b), bearer(key)))));
    reached(await statusesDuring(() => fc.assert(property, { numRuns: RUNS.wild })), [400, 403]);
  });

  it(`raw bodies: bytes, truncated and deeply nested JSON, huge numbers (${RUNS.raw} cases)`, async () => {
    const type = fc.constantFrom('application/json', 'text/plain', 'application/json; charset=latin1');
    const property = fc.asyncProperty(fc.constantFrom(...JSON_ROUTES), rawBody, type, async (route, b, t) => void (await sendAny(post(route, b, { ...bearer(KEYS.admin), 'content-type': t }))));
    reached(await statusesDuring(() => fc.assert(property, { numRuns: RUNS.raw })), [200, 400]);
  });

  it(`paths and query strings of the GET and admin routes (${RUNS.paths} cases)`, async () => {
    const property = fc.asyncProperty(pathProbe, fc.constantFrom(KEYS.acme, KEYS.globex, KEYS.admin), async (probe, key) => void (await send(s.url, { ...probe, headers: bearer(key) })));
    reached(await statusesDuring(() => fc.assert(property, { numRuns: RUNS.paths })), [200, 400, 403, 404]);
  });

  it(`headers: Authorization, X-Deltaserve-Tenant and Content-Type on every route (${RUNS.headers} cases)`, async () => {
    const probe = fc.oneof(
      pathProbe,
      fc.constantFrom(
        post(COMPLETIONS, json({ model: MODEL, prompt: 'hi', max_tokens: 2 })),
        post(CHAT, json({ model: 'mine', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 })),
        post(JOBS, json({ model: MODEL, training_file: 'file-nope' })),
      ),
    );
    const contentType = fc.oneof(fc.constantFrom('application/json', 'multipart/form-data; boundary=x', 'text/plain', ''), fc.string({ maxLength: 20 }).filter((t) => /^[\x20-\x7e]*$/.test(t)));
    const headers = fc.record({ authorization, 'x-deltaserve-tenant': tenantHeader, 'content-type': contentType }, { requiredKeys: [] });
    reached(await statusesDuring(() => fc.assert(fc.asyncProperty(probe, headers, async (p, h) => void (await sendAny({ ...p, headers: h }))), { numRuns: RUNS.headers })), [200, 400, 401, 403]);
  });

  it('afterwards: ready, the same greedy tokens, no leftovers, only the deltas and jobs made on purpose, memory bounded', async () => {
    assert.equal((await send(s.url, { method: 'GET', path: '/health/ready' })).status, 200);
    assert.deepEqual(await greedy(), greedyBefore);
    // Jobs the fuzzer created end (cancelled, or done if they finished first); nothing else was queued.
    const jobs = await allJobs();
    assert.deepEqual(jobs.map((j) => j.id).sort(), [...created.keys()].sort());
    for (const job of jobs) await waitForEnd(job.id);
    // A job that finished before its cancel published its delta: that one is made on purpose too.
    const published = (await allJobs()).filter((j) => j.status === 'succeeded').map((j) => j.fine_tuned_model as string);
    const expected = structuredClone(deltasBefore);
    for (const model of published) {
      // owner/name@N, private: listed for its owner only, under its plain name.
      const [, owner, name, version] = /^(\w+)\/(.+)@(\d+)$/.exec(model)! as unknown as [string, string, string, string];
      const versions = ((expected[owner] ??= {})[name] ??= []);
      versions.push(Number(version));
      versions.sort((a, b) => a - b);
    }
    assert.deepEqual(await snapshot(), expected);
    assertNoLeftovers(s.dataDir);
    const grown = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    assert.ok(grown < 300, `rss grew by ${grown.toFixed(0)} MiB`);
  });

  async function allJobs(): Promise<Json[]> {
    const jobs: Json[] = [];
    for (let after = ''; ; ) {
      const page = await send(s.url, { method: 'GET', path: `${JOBS}?limit=100${after ? `&after=${after}` : ''}`, headers: bearer(KEYS.admin) });
      jobs.push(...page.json.data);
      if (!page.json.has_more) return jobs;
      after = jobs[jobs.length - 1].id;
    }
  }

  /** Polls until the job ends; a job that never does fails here rather than hanging the suite. */
  async function waitForEnd(id: string): Promise<void> {
    for (let poll = 0; poll < 1200; poll++) {
      const job = await send(s.url, { method: 'GET', path: `${JOBS}/${id}`, headers: bearer(KEYS.admin) });
      if (['succeeded', 'failed', 'cancelled'].includes(job.json.status)) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.fail(`job ${id} has not ended after 1200 polls`);
  }
});
