/**
 * Two replicas over one S3 store (s3rver) and one PostgreSQL claims table, as two pods of the
 * Deployment run: what one does, the other sees within the staleness bound (--catalog-ttl-ms).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { ConfigSchema } from '../../src/config.js';
import { encodeSafetensors, parseSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, tempDir } from '../helpers.js';
import { postgresMissing, startPostgres, type TestPostgres } from '../postgres.js';
import { allEvents } from '../replicas.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const CONFIG = fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'));
const WEIGHTS = fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'));
const TTL_MS = 1000; // the default of --catalog-ttl-ms
const BOUND_MS = TTL_MS + 5000; // how long the tests wait for a replica to catch up before failing

/** The fixture adapter with every weight multiplied by `factor`: another delta of the same shape. */
function scaled(factor: number): Uint8Array {
  const parsed = parseSafetensors(WEIGHTS, 'fixture');
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [name, entry] of parsed.header.tensors) tensors[name] = { dtype: 'F32', shape: entry.shape, data: parsed.tensor(name).map((v) => v * factor) };
  return encodeSafetensors(tensors);
}

function deltaForm(name: string, weights: Uint8Array): FormData {
  const f = new FormData();
  f.set('name', name);
  f.set('adapter_config', new Blob([CONFIG as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  f.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  return f;
}

async function call(server: RunningServer, method: string, route: string, body?: unknown, headers: Record<string, string> = {}) {
  const init: RequestInit = { method, headers };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) Object.assign(init, { headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const res = await fetch(`${server.url}${route}`, init);
  return { status: res.status, json: (await res.json()) as Json };
}

async function greedy(server: RunningServer, model: string): Promise<{ status: number; tokens?: number[] }> {
  const res = await call(server, 'POST', '/v1/completions', { model, prompt: ref.input_ids[0], max_tokens: 6, temperature: 0, return_token_ids: true });
  return { status: res.status, tokens: res.json.choices?.[0].token_ids };
}

/** Polls `probe` until it holds or `BOUND_MS` passes; returns how long it took (ms), or throws. */
async function within<T>(what: string, probe: () => Promise<T>, holds: (value: T) => boolean): Promise<number> {
  const started = performance.now();
  let last: T | undefined;
  while (performance.now() - started < BOUND_MS) {
    last = await probe();
    if (holds(last)) return performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`${what}: not seen within ${BOUND_MS} ms; last ${JSON.stringify(last)}`);
}

const missing = postgresMissing();

describe('two replicas over one store (s3rver + a PostgreSQL claims table)', { skip: missing ?? false }, () => {
  const directory = tempDir('deltaserve-s3rver-');
  const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
  let pg: TestPostgres;
  let a: RunningServer;
  let b: RunningServer;
  const cacheDir = tempDir();

  before(async () => {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const { port } = await s3.run();
    Object.assign(process.env, { AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`, AWS_S3_FORCE_PATH_STYLE: 'true', AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' });
    const client = new S3Client({ endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    await client.send(new CreateBucketCommand({ Bucket: 'shared' }));
    client.destroy();
    pg = await startPostgres();
    const config = () => ConfigSchema.parse({ port: 0, cacheDir, dataDir: tempDir(), store: 's3://shared/deltas', controlDb: pg.url, model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, jobLeaseMs: 1500, logLevel: 'warn' });
    a = await startServer(config());
    await a.ready;
    b = await startServer(config());
    await b.ready;
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await pg?.stop();
    await s3.close();
  });

  it('an upload through A is usable through B at once; a new latest version and a delete reach B within the bound; numbers are never reused', async (t) => {
    assert.equal((await call(a, 'POST', '/v1/deltas', deltaForm('re', WEIGHTS))).json.version, 1);
    // Unknown to B's catalog: B asks the store before answering 404 (no staleness for a new name or name@N).
    assert.deepEqual(await greedy(b, 're'), { status: 200, tokens: ref.lora_all_r8.greedy_12[0]!.slice(0, 6) });
    assert.equal((await greedy(b, 're@1')).status, 200);

    const v2 = await call(a, 'POST', '/v1/deltas', deltaForm('re', scaled(3)));
    assert.equal(v2.json.version, 2);
    const expected = (await greedy(a, 're@2')).tokens;
    assert.notDeepEqual(expected, ref.lora_all_r8.greedy_12[0]!.slice(0, 6), 'v2 must answer differently for the test to mean anything');
    const latest = await within("B's 're' becomes v2", () => greedy(b, 're'), (r) => JSON.stringify(r.tokens) === JSON.stringify(expected));
    t.diagnostic(`latest version seen on B after ${latest.toFixed(0)} ms (bound: --catalog-ttl-ms ${TTL_MS})`);
    assert.deepEqual((await greedy(b, 're@2')).tokens, expected);
    // A pinned version B has not seen is read from the store at once.
    await call(a, 'POST', '/v1/deltas', deltaForm('re', scaled(5)));
    assert.equal((await greedy(b, 're@3')).status, 200, 'a pinned version B did not know is read at once');

    assert.equal((await call(a, 'DELETE', '/v1/deltas/re')).status, 200);
    const deleted = await within("B's 're' becomes 404", () => greedy(b, 're'), (r) => r.status === 404);
    t.diagnostic(`delete seen on B after ${deleted.toFixed(0)} ms`);
    for (const pinned of ['re@1', 're@2', 're@3']) assert.equal((await greedy(b, pinned)).status, 404, pinned);
    assert.equal((await call(b, 'GET', '/v1/deltas/re@2/files/adapter_model.safetensors')).status, 404);

    // The next upload, through either replica, is 4: a client pinned to re@1 never gets other weights.
    assert.equal((await call(b, 'POST', '/v1/deltas', deltaForm('re', WEIGHTS))).json.version, 4);
    assert.equal((await greedy(a, 're@4')).status, 200);
    assert.equal((await greedy(a, 're@1')).status, 404);
    assert.deepEqual((await call(a, 'GET', '/v1/deltas/re')).json.versions.map((v: Json) => v.version), [4]);
  });

  it('concurrent uploads of one name to both replicas get distinct versions; a retry with the same Idempotency-Key to the other replica creates nothing', async () => {
    const results = await Promise.all([a, b, a, b].map((s, i) => call(s, 'POST', '/v1/deltas', deltaForm('hot', scaled(1 + i)))));
    assert.deepEqual(results.map((r) => r.status), [201, 201, 201, 201]);
    assert.deepEqual(results.map((r) => r.json.version).sort(), [1, 2, 3, 4]);

    const key = { 'idempotency-key': 'upload-7f3a' };
    const first = await call(a, 'POST', '/v1/deltas', deltaForm('idem', WEIGHTS), key);
    const retried = await call(b, 'POST', '/v1/deltas', deltaForm('idem', WEIGHTS), key);
    assert.equal(first.status, 201);
    assert.equal(retried.status, 201);
    assert.equal(retried.json.version, first.json.version);
    const reused = await call(b, 'POST', '/v1/deltas', deltaForm('idem', scaled(2)), key);
    assert.equal(reused.status, 422);
    assert.equal(reused.json.error.param, 'Idempotency-Key');
    assert.equal((await call(a, 'POST', '/v1/deltas', deltaForm('idem', WEIGHTS), { 'idempotency-key': 'has space' })).status, 400);
    assert.deepEqual((await call(b, 'GET', '/v1/deltas/idem')).json.versions.map((v: Json) => v.version), [1]);
  });

  it('a training file uploaded to A is known to B; a job created on B is visible and cancellable on A, and runs on one replica only', async (t) => {
    const jsonl = JSON.stringify({ input_ids: [17, 250, 9, 42, 100, 300, 301], labels: [-100, -100, -100, -100, -100, 300, 301] });
    const form = new FormData();
    form.set('purpose', 'fine-tune');
    form.set('file', new Blob([jsonl]), 'task.jsonl');
    const file = await call(a, 'POST', '/admin/v1/files', form);
    assert.equal(file.status, 201);
    assert.equal((await call(b, 'GET', `/admin/v1/files/${file.json.id}`)).json.id, file.json.id);
    const request = { model: 'tiny-llama', training_file: file.json.id, name: 'never', hyperparameters: { max_steps: 100000, batch_size: 1, learning_rate: 1e-3 }, seed: 1 };
    const created = await call(b, 'POST', '/admin/v1/fine_tuning/jobs', request);
    assert.equal(created.status, 201, JSON.stringify(created.json));
    const id = created.json.id;
    assert.equal((await call(a, 'GET', `/admin/v1/fine_tuning/jobs/${id}`)).json.id, id);
    const running = await within('the job runs', () => call(a, 'GET', `/admin/v1/fine_tuning/jobs/${id}`), (r) => r.json.step >= 2);
    t.diagnostic(`job seen running on A after ${running.toFixed(0)} ms`);
    assert.equal((await call(a, 'POST', `/admin/v1/fine_tuning/jobs/${id}/cancel`)).status, 200);
    for (const s of [a, b]) {
      const ms = await within('cancelled everywhere', () => call(s, 'GET', `/admin/v1/fine_tuning/jobs/${id}`), (r) => r.json.status === 'cancelled');
      t.diagnostic(`cancel seen as done on ${s === a ? 'A' : 'B'} after ${ms.toFixed(0)} ms`);
    }
    const messages = (await allEvents(b.url, id)).map((e: Json) => e.message).reverse();
    assert.equal(messages.filter((m: string) => m.startsWith('Fine-tuning started')).length, 1, messages.join('\n'));
    assert.equal(messages.at(-1), 'Fine-tuning job cancelled');
    assert.equal((await call(a, 'GET', '/v1/deltas/never')).status, 404);
    // Listed by both (each replica's list is as fresh as its last look at the store).
    for (const s of [a, b]) await within('listed', () => call(s, 'GET', '/admin/v1/fine_tuning/jobs?limit=100'), (r) => r.json.data.some((j: Json) => j.id === id));
  });
});
