import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { encodeSafetensors, parseSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, tempDir } from '../helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const CONFIG = fs.readFileSync(path.join(LORA_DIR, 'adapter_config.json'));
const WEIGHTS = fs.readFileSync(path.join(LORA_DIR, 'adapter_model.safetensors'));
const MAX_DELTA = 200_000;

function form(name: string | undefined, config: Uint8Array | undefined, weights: Uint8Array | undefined, extra: Record<string, string> = {}): FormData {
  const f = new FormData();
  if (name !== undefined) f.set('name', name);
  if (config) f.set('adapter_config', new Blob([config as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  if (weights) f.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  for (const [k, v] of Object.entries(extra)) f.set(k, v);
  return f;
}

/** The fixture adapter with one tensor changed (or dropped, or added). */
function variant(change: (tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>) => void): Uint8Array {
  const parsed = parseSafetensors(WEIGHTS, 'fixture');
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [name, entry] of parsed.header.tensors) tensors[name] = { dtype: 'F32', shape: entry.shape, data: parsed.tensor(name) };
  change(tensors);
  return encodeSafetensors(tensors);
}

const configWith = (patch: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...JSON.parse(CONFIG.toString()), ...patch }));
const Q = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';

describe('delta store API (filesystem store)', () => {
  let server: RunningServer;
  const dataDir = tempDir();
  const cacheDir = tempDir();
  const start = async () => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir, dataDir, model: path.join(FIXTURE, 'base'), modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, maxDeltaBytes: MAX_DELTA }));
    await server.ready;
  };
  before(start);
  after(() => server.close());

  const upload = async (body: FormData) => {
    const res = await fetch(`${server.url}/v1/deltas`, { method: 'POST', body });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const greedy = async (model: string) => {
    const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: ref.input_ids[0], max_tokens: 12, temperature: 0, return_token_ids: true }) });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const versionsOf = async (id: string) => ((await (await fetch(`${server.url}/v1/deltas/${id}`)).json()) as Json).versions?.map((v: Json) => v.version);

  it('an uploaded PEFT adapter is served at once, exactly as PEFT computes it', async () => {
    const res = await upload(form('mine', CONFIG, WEIGHTS));
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.equal(res.json.version, 1);
    assert.equal(res.json.sha256, crypto.createHash('sha256').update(CONFIG).update(WEIGHTS).digest('hex'));
    assert.equal(res.json.kind, 'lora');
    assert.equal(res.json.family, 'reparameterization');
    assert.deepEqual(res.json.summary, { rank: 8, modules: 14 });
    assert.deepEqual((await greedy('mine')).json.choices[0].token_ids, ref.lora_all_r8.greedy_12[0]);
  });

  it('files download byte-identical to the upload', async () => {
    const config = new Uint8Array(await (await fetch(`${server.url}/v1/deltas/mine/files/adapter_config.json`)).arrayBuffer());
    const weights = new Uint8Array(await (await fetch(`${server.url}/v1/deltas/mine@1/files/adapter_model.safetensors`)).arrayBuffer());
    assert.deepEqual(Buffer.from(config), CONFIG);
    assert.deepEqual(Buffer.from(weights), WEIGHTS);
  });

  it('every upload is a new immutable version; name is the latest, name@N pins one', async () => {
    const doubled = variant((t) => Object.values(t).forEach((x) => (x.data = x.data.map((v) => v * 1.5))));
    assert.equal((await upload(form('mine', CONFIG, doubled))).json.version, 2);
    assert.deepEqual(await versionsOf('mine'), [1, 2]);
    const v1 = await greedy('mine@1');
    const latest = await greedy('mine');
    assert.deepEqual(v1.json.choices[0].token_ids, ref.lora_all_r8.greedy_12[0]);
    assert.deepEqual(latest.json.choices[0].token_ids, (await greedy('mine@2')).json.choices[0].token_ids);
    assert.notDeepEqual(latest.json.choices[0].token_ids, v1.json.choices[0].token_ids);
    assert.equal((await greedy('mine@3')).status, 404);
  });

  it('concurrent uploads of one name get distinct versions', async () => {
    const results = await Promise.all(Array.from({ length: 4 }, () => upload(form('busy', CONFIG, WEIGHTS))));
    assert.deepEqual(results.map((r) => r.status), [201, 201, 201, 201]);
    assert.deepEqual(results.map((r) => r.json.version).sort(), [1, 2, 3, 4]);
  });

  it('bad uploads are rejected with a message naming the problem, and leave the store unchanged', async () => {
    const before = await versionsOf('mine');
    const cases: [FormData, number, RegExp][] = [
      [form('mine', CONFIG, WEIGHTS.subarray(0, WEIGHTS.length - 100)), 422, /truncated/],
      [form('mine', CONFIG, variant((t) => (t[Q] = { dtype: 'F32', shape: [8, 32], data: new Float32Array(256) }))), 422, /q_proj\.lora_A\.weight.*shape/],
      [form('mine', configWith({ target_modules: ['nonsense'] }), variant((t) => (t['base_model.model.model.layers.0.mlp.nonsense.lora_A.weight'] = { dtype: 'F32', shape: [8, 64], data: new Float32Array(512) }))), 422, /target_modules selects no module/],
      [form('mine', CONFIG, variant((t) => (t[Q]!.data[3] = NaN))), 422, /not finite/],
      // A peft_type no kind serves (PREFIX_TUNING, once used here, is a kind now and fails for its own reasons).
      [form('mine', configWith({ peft_type: 'NO_SUCH_METHOD' }), WEIGHTS), 422, /peft_type 'NO_SUCH_METHOD' is not a delta kind/],
      [form('mine', configWith({ r: 32 }), variant((t) => (t[Q] = { dtype: 'F32', shape: [32, 64], data: new Float32Array(32 * 64) }))), 422, /rank 32 exceeds max rank 8/],
      [form('mine', CONFIG, new Uint8Array(MAX_DELTA + 1)), 413, /exceeds the limit/],
      [form('mine', CONFIG, undefined), 400, /adapter_model/],
      [form('../evil', CONFIG, WEIGHTS), 400, /name/],
      [form(undefined, CONFIG, WEIGHTS), 400, /name/],
    ];
    // overlapping offsets: rewrite the header so two tensors share bytes
    const bytes = Buffer.from(WEIGHTS);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    const first = names[0]!;
    const second = names.find((n) => n !== first && JSON.stringify(header[n].shape) === JSON.stringify(header[first].shape));
    header[second!].data_offsets = header[first!].data_offsets;
    const json = Buffer.from(JSON.stringify(header).padEnd(headerLength, ' '));
    assert.ok(json.length <= headerLength, 'the rewritten header must fit the original length');
    cases.push([form('mine', CONFIG, Buffer.concat([bytes.subarray(0, 8), json, bytes.subarray(8 + headerLength)])), 422, /overlap|gap|offset/]);
    for (const [body, status, message] of cases) {
      const res = await upload(body);
      assert.equal(res.status, status, JSON.stringify(res.json));
      assert.match(res.json.error.message, message);
    }
    assert.deepEqual(await versionsOf('mine'), before);
  });

  it('deltas survive a restart; DELETE removes every version', async () => {
    await server.close();
    await start();
    assert.deepEqual(await versionsOf('mine'), [1, 2]);
    assert.deepEqual((await greedy('mine@1')).json.choices[0].token_ids, ref.lora_all_r8.greedy_12[0]);
    const del = await fetch(`${server.url}/v1/deltas/mine`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    assert.equal((await greedy('mine')).status, 404);
    assert.equal((await fetch(`${server.url}/v1/deltas/mine`)).status, 404);
    const list = (await (await fetch(`${server.url}/v1/deltas`)).json()) as Json;
    assert.deepEqual(list.data.map((d: Json) => d.name), ['busy']);
  });
});
