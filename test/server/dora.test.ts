/**
 * DoRA adapters through HTTP on the PEFT fixture backbone: uploaded and registered at startup,
 * downloaded byte-identical, versioned, reloaded after a restart (through the loader thread and
 * its checkpoint reader), served beside base and LoRA requests, and checked against the oracle
 * written from PEFT's dora.py; bad DoRA uploads are 422 naming the tensor or field.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { encodeSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, logSoftmax, tempDir } from '../helpers.js';
import { loadSafetensorsF32, loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { oracleDora, writeTinyDora } from '../oracle/kinds/dora.js';
import { oracleForward, oracleGreedy } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();
const BASE_DIR = path.join(FIXTURE, 'base');
const LORA_DIR = path.join(FIXTURE, 'lora_all_r8');
const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const root = tempDir('deltaserve-dora-http-');
const DORA_DIR = path.join(root, 'dora');
const STARTUP_DIR = path.join(root, 'dora-startup');
writeTinyDora(DORA_DIR, 'llama', { seed: 7, r: 8, alpha: 16, targetModules: TARGETS, baseDir: BASE_DIR });
writeTinyDora(STARTUP_DIR, 'llama', { seed: 8, r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], baseDir: BASE_DIR, magnitudeKey: 'weight' });
const CONFIG = fs.readFileSync(path.join(DORA_DIR, 'adapter_config.json'));
const WEIGHTS = fs.readFileSync(path.join(DORA_DIR, 'adapter_model.safetensors'));
const MODEL_CONFIG = readConfig(BASE_DIR);
const BASE_WEIGHTS = loadWeightsF32(BASE_DIR);
const MAG = 'base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector';

function form(name: string, config: Uint8Array, weights: Uint8Array): FormData {
  const f = new FormData();
  f.set('name', name);
  f.set('adapter_config', new Blob([config as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  f.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  return f;
}

/** The DoRA adapter's tensors with one change. */
function variant(change: (tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>) => void): Uint8Array {
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of loadSafetensorsF32(path.join(DORA_DIR, 'adapter_model.safetensors'))) tensors[name] = { dtype: 'F32', shape: t.shape, data: Float32Array.from(t.data) };
  change(tensors);
  return encodeSafetensors(tensors, { format: 'pt' });
}

describe('DoRA through HTTP (PEFT fixture backbone)', () => {
  let server: RunningServer;
  const dataDir = tempDir();
  const cacheDir = tempDir();
  const start = async () => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir, dataDir, model: BASE_DIR, modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, delta: [`lora=${LORA_DIR}`, `dora-startup=${STARTUP_DIR}`] }));
    await server.ready;
  };
  before(start);
  after(() => server.close());

  const post = async (url: string, body: FormData | object) => {
    const init = body instanceof FormData ? { body } : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } };
    const res = await fetch(`${server.url}${url}`, { method: 'POST', ...init });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const greedy = async (model: string, row = 0) => (await post('/v1/completions', { model, prompt: ref.input_ids[row], max_tokens: 12, temperature: 0, return_token_ids: true })).json.choices[0].token_ids;
  const oracleTokens = (dir: string, row = 0) => oracleGreedy(MODEL_CONFIG, BASE_WEIGHTS, ref.input_ids[row]!, 12, undefined, [oracleDora(dir, MODEL_CONFIG, BASE_WEIGHTS)]);

  it('an uploaded DoRA adapter is a LoRA delta with dora: true, and downloads byte-identical', async () => {
    const res = await post('/v1/deltas', form('mine', CONFIG, WEIGHTS));
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.equal(res.json.kind, 'lora');
    assert.deepEqual(res.json.summary, { rank: 8, modules: 14, dora: true });
    const config = new Uint8Array(await (await fetch(`${server.url}/v1/deltas/mine@1/files/adapter_config.json`)).arrayBuffer());
    const weights = new Uint8Array(await (await fetch(`${server.url}/v1/deltas/mine/files/adapter_model.safetensors`)).arrayBuffer());
    assert.deepEqual(Buffer.from(config), CONFIG);
    assert.deepEqual(Buffer.from(weights), WEIGHTS);
  });

  it('echoed prompt logprobs match the PEFT oracle within 1e-4, and greedy continuations exactly', async () => {
    const dora = oracleDora(DORA_DIR, MODEL_CONFIG, BASE_WEIGHTS);
    for (let row = 0; row < ref.input_ids.length; row++) {
      const ids = ref.input_ids[row]!;
      const { json } = await post('/v1/completions', { model: 'mine', prompt: ids, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
      const logits = oracleForward(MODEL_CONFIG, BASE_WEIGHTS, ids, undefined, [dora]);
      for (let i = 1; i < ids.length; i++) {
        const want = logSoftmax(logits[i - 1]!)[ids[i]!]!;
        const got = json.choices[0].logprobs.token_logprobs[i];
        assert.ok(Math.abs(got - want) <= 1e-4, `row ${row} pos ${i}: got ${got}, want ${want}`);
      }
      assert.deepEqual(await greedy('mine', row), oracleTokens(DORA_DIR, row), `row ${row}`);
    }
  });

  it('a DoRA registered at startup (magnitudes saved as .weight) is served as the oracle computes it', async () => {
    assert.deepEqual(await greedy('dora-startup'), oracleTokens(STARTUP_DIR));
  });

  it('concurrent base, LoRA and DoRA requests each get what they get alone', async () => {
    const models = ['tiny-llama', 'lora', 'mine', 'dora-startup'];
    const alone = [];
    for (const m of models) alone.push(await greedy(m, 1));
    assert.deepEqual(await Promise.all(models.map((m) => greedy(m, 1))), alone);
    assert.deepEqual(alone[1], ref.lora_all_r8.greedy_12[1]);
    assert.equal(new Set(alone.map((t) => JSON.stringify(t))).size, 4, 'four different continuations');
  });

  it('bad DoRA uploads are 422 naming the tensor or field, and store nothing', async () => {
    const cases: [Uint8Array, Uint8Array, RegExp][] = [
      [CONFIG, variant((t) => (t[MAG]!.data[5] = NaN)), /down_proj\.lora_magnitude_vector: value at index 5 is not finite/],
      [CONFIG, variant((t) => delete t[MAG]), /use_dora is true but base_model\.model\.model\.layers\.1\.mlp\.down_proj\.lora_magnitude_vector is missing/],
      [CONFIG, variant((t) => (t[MAG] = { dtype: 'F32', shape: [65], data: new Float32Array(65) })), /down_proj\.lora_magnitude_vector: shape \[65\], expected \[64\]/],
      [Buffer.from(JSON.stringify({ ...JSON.parse(CONFIG.toString()), use_dora: 1 })), WEIGHTS, /use_dora must be true or false, got 1/],
    ];
    for (const [config, weights, message] of cases) {
      const res = await post('/v1/deltas', form('broken', config, weights));
      assert.equal(res.status, 422, JSON.stringify(res.json));
      assert.match(res.json.error.message, message);
    }
    assert.equal((await fetch(`${server.url}/v1/deltas/broken`)).status, 404);
  });

  it('versions pin their magnitudes, and survive a restart (reloaded through the loader thread)', async () => {
    const doubled = variant((t) => Object.entries(t).forEach(([k, x]) => k.endsWith('lora_magnitude_vector') && (x.data = x.data.map((v) => v * 1.2))));
    assert.equal((await post('/v1/deltas', form('mine', CONFIG, doubled))).json.version, 2);
    const v2 = await greedy('mine@2');
    assert.notDeepEqual(v2, await greedy('mine@1'));
    await server.close();
    await start();
    assert.deepEqual(await greedy('mine@1'), oracleTokens(DORA_DIR));
    assert.deepEqual(await greedy('mine'), v2);
  });
});
