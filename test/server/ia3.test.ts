/**
 * IA3 deltas through HTTP on the tiny Llama fixture: registered at startup (--delta) and uploaded
 * (POST /v1/deltas), served, versioned and downloaded like any delta; echoed logprobs and greedy
 * continuations equal the oracle built from PEFT's source; bad uploads are 422 and store nothing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { encodeSafetensors, parseSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, logSoftmax, tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { loadOracleIa3, writeTinyIa3 } from '../oracle/kinds/ia3.js';
import { oracleForward, oracleGreedy, type OracleDelta } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE = path.join(FIXTURE, 'base');
const PROMPT = loadReference().input_ids[0]!;
const root = tempDir('deltaserve-ia3-http-');
const WIDE = path.join(root, 'wide');
const STARTUP = path.join(root, 'startup');
writeTinyIa3(WIDE, { baseDir: BASE, seed: 7, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], feedforwardModules: ['up_proj', 'down_proj'] });
writeTinyIa3(STARTUP, { baseDir: BASE, seed: 8 });
const CONFIG = fs.readFileSync(path.join(WIDE, 'adapter_config.json'));
const WEIGHTS = fs.readFileSync(path.join(WIDE, 'adapter_model.safetensors'));

function form(name: string, config: Uint8Array, weights: Uint8Array): FormData {
  const f = new FormData();
  f.set('name', name);
  f.set('adapter_config', new Blob([config as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  f.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  return f;
}

/** The adapter's tensors with `change` applied, re-encoded. */
function variant(change: (tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>) => void): Uint8Array {
  const parsed = parseSafetensors(WEIGHTS, 'wide');
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [name, entry] of parsed.header.tensors) tensors[name] = { dtype: 'F32', shape: entry.shape, data: parsed.tensor(name) };
  change(tensors);
  return encodeSafetensors(tensors, { format: 'pt' });
}

const configWith = (patch: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...JSON.parse(CONFIG.toString()), ...patch }));
const DOWN0 = 'base_model.model.model.layers.0.mlp.down_proj.ia3_l';

describe('IA3 through HTTP', () => {
  let server: RunningServer;
  const config = readConfig(BASE);
  const weights = loadWeightsF32(BASE);
  const oracle = (dir: string) => loadOracleIa3(dir, BASE);

  before(async () => {
    server = await startServer(ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: BASE, modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, delta: [`startup-ia3=${STARTUP}`] }));
    await server.ready;
  });
  after(() => server.close());

  const post = async (route: string, body: unknown) => {
    const res = await fetch(`${server.url}${route}`, body instanceof FormData ? { method: 'POST', body } : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const versionsOf = async (id: string) => ((await (await fetch(`${server.url}/v1/deltas/${id}`)).json()) as Json).versions?.map((v: Json) => v.version);

  const hookedKinds = async (url: string) => [...(await (await fetch(`${url}/metrics`)).text()).matchAll(/^deltaserve_delta_kind_hooked\{kind="([^"]+)"\} 1$/gm)].map((m) => m[1]).sort();

  it('a server without deltas hooks in LoRA only, IA3 on its first upload, and the kind of a stored delta before ready after a restart', async () => {
    assert.deepEqual(await hookedKinds(server.url), ['ia3', 'lora']);
    const settings = { port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: BASE, modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8 };
    const bare = await startServer(ConfigSchema.parse(settings));
    try {
      await bare.ready;
      assert.deepEqual(await hookedKinds(bare.url), ['lora']);
      const up = await fetch(`${bare.url}/v1/deltas`, { method: 'POST', body: form('late-ia3', CONFIG, WEIGHTS) });
      assert.equal(up.status, 201, await up.text());
      const res = await fetch(`${bare.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'late-ia3', prompt: PROMPT, max_tokens: 4, temperature: 0, return_token_ids: true }) });
      assert.equal(res.status, 200, await res.clone().text());
      assert.deepEqual(((await res.json()) as Json).choices[0].token_ids, oracleGreedy(config, weights, PROMPT, 4, undefined, [oracle(WIDE)]));
      assert.deepEqual(await hookedKinds(bare.url), ['ia3', 'lora']);
    } finally {
      await bare.close();
    }
    // Restarted over the same store: the stored delta's kind is hooked in before ready.
    const again = await startServer(ConfigSchema.parse(settings));
    try {
      await again.ready;
      assert.deepEqual(await hookedKinds(again.url), ['ia3', 'lora']);
    } finally {
      await again.close();
    }
  });

  /** Echoed prompt logprobs within 1e-4 of the oracle's, and a greedy continuation equal to it. */
  const matchesOracle = async (model: string, delta: OracleDelta) => {
    const echo = await post('/v1/completions', { model, prompt: PROMPT, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
    assert.equal(echo.status, 200, JSON.stringify(echo.json));
    const got = echo.json.choices[0].logprobs.token_logprobs as (number | null)[];
    const expected = oracleForward(config, weights, PROMPT, undefined, [delta]);
    for (let i = 1; i < PROMPT.length; i++) {
      const want = logSoftmax(expected[i - 1]!)[PROMPT[i]!]!;
      assert.ok(Math.abs(got[i]! - want) <= 1e-4, `${model} position ${i}: got ${got[i]}, want ${want}`);
    }
    const greedy = await post('/v1/completions', { model, prompt: PROMPT, max_tokens: 8, temperature: 0, return_token_ids: true });
    assert.deepEqual(greedy.json.choices[0].token_ids, oracleGreedy(config, weights, PROMPT, 8, undefined, [delta]));
    return greedy.json.choices[0].token_ids as number[];
  };

  it('a delta registered at startup (--delta) is served as PEFT computes it', async () => {
    await matchesOracle('startup-ia3', oracle(STARTUP));
  });

  it('an uploaded IA3 adapter is kind ia3, served at once as PEFT computes it, and downloads byte-identical', async () => {
    const res = await post('/v1/deltas', form('mine', CONFIG, WEIGHTS));
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.equal(res.json.kind, 'ia3');
    assert.equal(res.json.family, 'addition');
    assert.deepEqual(res.json.summary, { modules: 14, feedforward: 4, params: 2 * (64 + 32 + 32 + 64 + 176 + 64 + 176) });
    assert.deepEqual(res.json.warnings, []);
    const mine = await matchesOracle('mine', oracle(WIDE));
    const base = await post('/v1/completions', { model: 'tiny-llama', prompt: PROMPT, max_tokens: 8, temperature: 0, return_token_ids: true });
    assert.notDeepEqual(mine, base.json.choices[0].token_ids, 'the delta changes the continuation');
    const config = new Uint8Array(await (await fetch(`${server.url}/v1/deltas/mine/files/adapter_config.json`)).arrayBuffer());
    const weights = new Uint8Array(await (await fetch(`${server.url}/v1/deltas/mine@1/files/adapter_model.safetensors`)).arrayBuffer());
    assert.deepEqual(Buffer.from(config), CONFIG);
    assert.deepEqual(Buffer.from(weights), WEIGHTS);
  });

  it('a second upload is version 2 and pins apart from version 1; ignored tensors come back as warnings', async () => {
    const dir = path.join(root, 'v2');
    const extra = variant((t) => {
      for (const tensor of Object.values(t)) tensor.data = tensor.data.map((v) => 2 - v);
      t['base_model.model.model.layers.0.mlp.nonsense.ia3_l'] = { dtype: 'F32', shape: [4, 1], data: new Float32Array(4).fill(3) };
    });
    const res = await post('/v1/deltas', form('mine', CONFIG, extra));
    assert.equal(res.json.version, 2);
    assert.equal(res.json.warnings.length, 1);
    assert.match(res.json.warnings[0], /mlp\.nonsense\.ia3_l: ignored: the backbone has no such module/);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), CONFIG);
    fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), extra);
    await matchesOracle('mine@2', oracle(dir));
    await matchesOracle('mine@1', oracle(WIDE));
  });

  it('bad IA3 uploads are 422 naming the tensor or field, and store nothing', async () => {
    const before = await versionsOf('mine');
    const cases: [Uint8Array, Uint8Array, RegExp][] = [
      [CONFIG, variant((t) => (t[DOWN0] = { dtype: 'F32', shape: [64, 1], data: new Float32Array(64).fill(1) })), /layers\.0\.mlp\.down_proj\.ia3_l: shape \[64,1\], expected \[1,176\]/],
      [CONFIG, variant((t) => (t[DOWN0]!.data[9] = Infinity)), /down_proj\.ia3_l: value at index 9 is not finite/],
      [configWith({ feedforward_modules: ['down_proj', 'lm_head'] }), WEIGHTS, /feedforward_modules must be a subset of target_modules/],
      [configWith({ target_modules: ['lm_head'], feedforward_modules: [] }), WEIGHTS, /'lm_head', an output head module/],
      [configWith({ init_ia3_weights: 'yes' }), WEIGHTS, /init_ia3_weights must be true or false/],
    ];
    for (const [config, weights, message] of cases) {
      const res = await post('/v1/deltas', form('mine', config, weights));
      assert.equal(res.status, 422, JSON.stringify(res.json));
      assert.match(res.json.error.message, message);
    }
    assert.deepEqual(await versionsOf('mine'), before);
  });
});
