/**
 * Bottleneck adapters through HTTP on the fixture backbone: uploaded (and registered with --delta
 * from an AdapterHub directory holding adapter.safetensors), served exactly as the oracle written
 * from the `adapters` library computes them (echoed logprobs, greedy continuations, stacked with
 * a LoRA), downloaded byte-identical, versioned, and refused with named problems when invalid.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { encodeSafetensors, parseSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, logSoftmax, tempDir } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { oracleForward, oracleGreedy, type OracleDelta } from '../oracle/transformer.js';
import { writeTinyBottleneck } from '../oracle/kinds/bottleneck-checkpoint.js';
import { oracleBottleneck } from '../oracle/kinds/bottleneck.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE_DIR = path.join(FIXTURE, 'base');
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const PROMPTS = loadReference().input_ids;
const root = tempDir('deltaserve-bottleneck-http-');
const PFEIFFER = path.join(root, 'pfeiffer');
const HOULSBY = path.join(root, 'houlsby');
writeTinyBottleneck(PFEIFFER, { baseDir: BASE_DIR, preset: 'seq_bn', name: 'sst2', seed: 8 });
writeTinyBottleneck(HOULSBY, { baseDir: BASE_DIR, preset: 'double_seq_bn', config: { ln_after: true, non_linearity: 'gelu' }, seed: 9 });
const CONFIG = fs.readFileSync(path.join(PFEIFFER, 'adapter_config.json'));
const WEIGHTS = fs.readFileSync(path.join(PFEIFFER, 'adapter.safetensors'));
const config = readConfig(BASE_DIR);
const weights = loadWeightsF32(BASE_DIR);

function form(name: string, adapterConfig: Uint8Array, adapterModel: Uint8Array): FormData {
  const f = new FormData();
  f.set('name', name);
  f.set('adapter_config', new Blob([adapterConfig as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  f.set('adapter_model', new Blob([adapterModel as Uint8Array<ArrayBuffer>]), 'adapter.safetensors');
  return f;
}

/** The Pfeiffer adapter with its tensors changed. */
function variant(change: (tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>) => void): Uint8Array {
  const parsed = parseSafetensors(WEIGHTS, 'fixture');
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [name, entry] of parsed.header.tensors) tensors[name] = { dtype: 'F32', shape: entry.shape, data: parsed.tensor(name) };
  change(tensors);
  return encodeSafetensors(tensors);
}

const configWith = (patch: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...JSON.parse(CONFIG.toString()), config: { ...JSON.parse(CONFIG.toString()).config, ...patch } }));

describe('bottleneck adapters over HTTP', () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer(ConfigSchema.parse({ port: 0, host: '127.0.0.1', cacheDir: tempDir(), dataDir: tempDir(), model: BASE_DIR, modelName: 'tiny-llama', maxContext: 64, maxRows: 4, threads: 1, maxRank: 8, maxBottleneck: 16, delta: [`houlsby=${HOULSBY}`, `lora=${LORA_DIR}`] }));
    await server.ready;
  });
  after(() => server?.close());

  const post = async (route: string, body: FormData | Record<string, unknown>) => {
    const res = await fetch(`${server.url}${route}`, body instanceof FormData ? { method: 'POST', body } : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const greedy = async (model: string, prompt: number[]) => {
    const res = await post('/v1/completions', { model, prompt, max_tokens: 8, temperature: 0, return_token_ids: true });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.choices[0].token_ids as number[];
  };
  const versionsOf = async (id: string) => ((await (await fetch(`${server.url}/v1/deltas/${id}`)).json()) as Json).versions?.map((v: Json) => v.version);

  it('an uploaded adapter is stored and described as a bottleneck delta', async () => {
    const res = await post('/v1/deltas', form('sst2', CONFIG, WEIGHTS));
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.equal(res.json.kind, 'bottleneck');
    assert.equal(res.json.family, 'addition');
    assert.deepEqual(res.json.summary, { modules: 2, width: 4, params: 2 * (4 * 64 + 4 + 64 * 4 + 64), activation: 'relu', parallel: false });
    assert.deepEqual(res.json.warnings, []);
    assert.equal(res.json.sha256, crypto.createHash('sha256').update(CONFIG).update(WEIGHTS).digest('hex'));
  });

  it('echoed prompt logprobs match the oracle within 1e-4, and differ from the base', async () => {
    const delta = oracleBottleneck(PFEIFFER, config);
    for (const ids of PROMPTS) {
      const res = await post('/v1/completions', { model: 'sst2', prompt: ids, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
      assert.equal(res.status, 200, JSON.stringify(res.json));
      const got: (number | null)[] = res.json.choices[0].logprobs.token_logprobs;
      const expected = oracleForward(config, weights, ids, undefined, [delta]);
      const base = oracleForward(config, weights, ids);
      for (let i = 1; i < ids.length; i++) {
        const want = logSoftmax(expected[i - 1]!)[ids[i]!]!;
        assert.ok(Math.abs(got[i]! - want) <= 1e-4, `position ${i}: got ${got[i]}, want ${want}`);
      }
      assert.ok(Math.abs(logSoftmax(base.at(-2)!)[ids.at(-1)!]! - got.at(-1)!) > 1e-3, 'the adapter changes the logprobs');
    }
  });

  it('greedy continuations equal the oracle: uploaded, registered from an AdapterHub directory, stacked with a LoRA', async () => {
    const cases: [string, OracleDelta[], boolean][] = [
      ['sst2', [oracleBottleneck(PFEIFFER, config)], false],
      ['houlsby', [oracleBottleneck(HOULSBY, config)], false],
      ['sst2+lora', [oracleBottleneck(PFEIFFER, config)], true],
    ];
    for (const [model, deltas, withLora] of cases) {
      for (const ids of PROMPTS) assert.deepEqual(await greedy(model, ids), oracleGreedy(config, weights, ids, 8, withLora ? loadOracleLora(LORA_DIR) : undefined, deltas), `${model}, prompt ${ids.slice(0, 4)}`);
    }
  });

  it('files download byte-identical; a new upload is a new version, the old one still served', async () => {
    const file = async (f: string) => Buffer.from(await (await fetch(`${server.url}/v1/deltas/sst2@1/files/${f}`)).arrayBuffer());
    assert.deepEqual(await file('adapter_config.json'), CONFIG);
    assert.deepEqual(await file('adapter_model.safetensors'), WEIGHTS);
    const before = await greedy('sst2', PROMPTS[0]!);
    const doubled = variant((t) => Object.values(t).forEach((x) => (x.data = x.data.map((v) => v * 2))));
    assert.equal((await post('/v1/deltas', form('sst2', CONFIG, doubled))).json.version, 2);
    assert.deepEqual(await versionsOf('sst2'), [1, 2]);
    assert.deepEqual(await greedy('sst2@1', PROMPTS[0]!), before);
    const dir = path.join(root, 'doubled');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), CONFIG);
    fs.writeFileSync(path.join(dir, 'adapter.safetensors'), doubled);
    assert.deepEqual(await greedy('sst2', PROMPTS[0]!), oracleGreedy(config, weights, PROMPTS[0]!, 8, undefined, [oracleBottleneck(dir, config)]));
  });

  it('invalid adapters are refused with 422 naming the field or tensor, and nothing is stored', async () => {
    const key = 'model.layers.0.output_adapters.adapters.sst2.adapter_up.weight';
    const cases: [FormData, RegExp][] = [
      [form('sst2', configWith({ residual_before_ln: 'post_add' }), WEIGHTS), /residual_before_ln 'post_add' is not supported/],
      [form('sst2', configWith({ use_gating: true }), WEIGHTS), /use_gating true is not supported/],
      [form('sst2', configWith({ reduction_factor: 2 }), WEIGHTS), /bottleneck width 32 .* exceeds max bottleneck 16/],
      [form('sst2', CONFIG, variant((t) => (t[key] = { dtype: 'F32', shape: [64, 3], data: new Float32Array(192) }))), /adapter_up\.weight: shape \[64,3\], expected \[64,4\]/],
      [form('sst2', CONFIG, variant((t) => (t[key]!.data[0] = Infinity))), /adapter_up\.weight: value at index 0 is not finite/],
      [form('sst2', CONFIG, new Uint8Array([0x50, 0x4b, 0x03, 0x04, 0x14, 0, 0, 0, 8, 0])), /PyTorch pickle/],
    ];
    for (const [body, message] of cases) {
      const res = await post('/v1/deltas', body);
      assert.equal(res.status, 422, JSON.stringify(res.json));
      assert.match(res.json.error.message, message);
    }
    assert.deepEqual(await versionsOf('sst2'), [1, 2]);
  });
});
