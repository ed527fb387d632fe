/**
 * The specification kinds (BitFit, LN tuning) through HTTP on the PEFT fixture's Llama: one
 * registered at startup, one uploaded; both downloadable byte-identical and versioned; echoed
 * prompt logprobs and greedy continuations — alone and stacked with each other and a LoRA — equal
 * to the oracle's; bad uploads refused with a 422 naming the problem, storing nothing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, logSoftmax, tempDir } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { bitfitOracle, writeTinyBitfit } from '../oracle/kinds/bitfit.js';
import { lnTuningOracle, writeTinyLnTuning } from '../oracle/kinds/ln-tuning.js';
import { oracleForward, oracleGreedy, type OracleDelta, type OracleLora } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE_DIR = path.join(FIXTURE, 'base');
const LORA = path.join(FIXTURE, 'lora_all_r8');
const PROMPT = loadReference().input_ids[0]!;
const root = tempDir('deltaserve-spec-http-');
const BITFIT = path.join(root, 'bitfit');
const LN = path.join(root, 'ln');
writeTinyBitfit(BITFIT, 'llama', { baseDir: BASE_DIR, seed: 21 });
writeTinyLnTuning(LN, 'llama', { baseDir: BASE_DIR, seed: 22 });
const files = (dir: string) => ({ config: fs.readFileSync(path.join(dir, 'adapter_config.json')), weights: fs.readFileSync(path.join(dir, 'adapter_model.safetensors')) });

function form(name: string, config: Uint8Array, weights: Uint8Array): FormData {
  const f = new FormData();
  f.set('name', name);
  f.set('adapter_config', new Blob([config as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  f.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  return f;
}

describe('BitFit and LN tuning deltas through HTTP', () => {
  let server: RunningServer;
  const modelConfig = readConfig(BASE_DIR);
  const weights = loadWeightsF32(BASE_DIR);
  const oracles: Record<string, { lora?: OracleLora; deltas: OracleDelta[] }> = {};

  before(async () => {
    const lora = loadOracleLora(LORA);
    const bf = bitfitOracle(BITFIT, weights);
    const ln = lnTuningOracle(LN, modelConfig, weights);
    Object.assign(oracles, { bf: { deltas: [bf] }, 'bf-up': { deltas: [bf] }, ln: { deltas: [ln] }, 'bf+ln+lora': { lora, deltas: [bf, ln] } });
    const config = ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: BASE_DIR, modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, delta: [`bf=${BITFIT}`, `lora=${LORA}`] });
    server = await startServer(config);
    await server.ready;
  });
  after(() => server?.close());

  const post = async (route: string, body: unknown) => {
    const res = await fetch(`${server.url}${route}`, body instanceof FormData ? { method: 'POST', body } : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const download = async (ref: string, file: string) => Buffer.from(await (await fetch(`${server.url}/v1/deltas/${ref}/files/${file}`)).arrayBuffer());
  const versionsOf = async (name: string) => ((await (await fetch(`${server.url}/v1/deltas/${name}`)).json()) as Json).versions?.map((v: Json) => v.version);

  it('adapters of both kinds upload (a new version each time) and download byte-identical, as does the one registered at startup', async () => {
    const ln = files(LN);
    const res = await post('/v1/deltas', form('ln', ln.config, ln.weights));
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.equal(res.json.kind, 'ln_tuning');
    assert.equal(res.json.family, 'specification');
    assert.deepEqual(res.json.summary, { modules: 5, params: 5 * 64 });
    assert.equal((await post('/v1/deltas', form('ln', ln.config, ln.weights))).json.version, 2);
    assert.deepEqual(await versionsOf('ln'), [1, 2]);
    const bf = files(BITFIT);
    const uploaded = await post('/v1/deltas', form('bf-up', bf.config, bf.weights));
    assert.equal(uploaded.status, 201, JSON.stringify(uploaded.json));
    assert.equal(uploaded.json.kind, 'bitfit');
    for (const [ref, expected] of [['ln@1', ln], ['bf', bf], ['bf-up', bf]] as const) {
      assert.deepEqual(await download(ref, 'adapter_config.json'), expected.config, `${ref} config`);
      assert.deepEqual(await download(ref, 'adapter_model.safetensors'), expected.weights, `${ref} weights`);
    }
    const registered = (await (await fetch(`${server.url}/v1/deltas/bf`)).json()) as Json;
    assert.deepEqual([registered.kind, registered.family, registered.summary], ['bitfit', 'specification', { modules: 14, params: 2 * (64 + 32 + 32 + 64 + 176 + 176 + 64) }]);
  });

  for (const model of ['bf', 'bf-up', 'ln', 'bf+ln+lora']) {
    it(`${model}: echoed prompt logprobs match the oracle within 1e-4 and the greedy continuation is the oracle's`, async () => {
      const { lora, deltas } = oracles[model]!;
      const echo = await post('/v1/completions', { model, prompt: PROMPT, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
      assert.equal(echo.status, 200, JSON.stringify(echo.json));
      const expected = oracleForward(modelConfig, weights, PROMPT, lora, deltas);
      const got = echo.json.choices[0].logprobs.token_logprobs as (number | null)[];
      assert.equal(got.length, PROMPT.length);
      for (let i = 1; i < PROMPT.length; i++) {
        const want = logSoftmax(expected[i - 1]!)[PROMPT[i]!]!;
        assert.ok(Math.abs(got[i]! - want) <= 1e-4, `position ${i}: got ${got[i]}, want ${want}`);
      }
      const greedy = await post('/v1/completions', { model, prompt: PROMPT, max_tokens: 8, temperature: 0, return_token_ids: true });
      assert.equal(greedy.status, 200, JSON.stringify(greedy.json));
      assert.deepEqual(greedy.json.choices[0].token_ids, oracleGreedy(modelConfig, weights, PROMPT, 8, lora, deltas));
    });
  }

  it('bad adapters of either kind are refused with a 422 naming the problem, and nothing is stored', async () => {
    const ln = files(LN);
    const bf = files(BITFIT);
    const lnConfig = (patch: object) => Buffer.from(JSON.stringify({ ...JSON.parse(ln.config.toString()), ...patch }));
    const bfConfig = (patch: object) => Buffer.from(JSON.stringify({ ...JSON.parse(bf.config.toString()), ...patch }));
    const cases: [FormData, RegExp][] = [
      [form('ln', lnConfig({ target_modules: ['q_proj'] }), ln.weights), /q_proj', a linear module; LN tuning serves norm layers only/],
      [form('ln', lnConfig({ modules_to_save: ['lm_head'] }), ln.weights), /modules_to_save/],
      [form('bf', bfConfig({ target_modules: ['post_attention_layernorm'] }), bf.weights), /post_attention_layernorm', a norm module/],
      [form('bf', bfConfig({ task_type: 'TRANSLATE' }), bf.weights), /task_type must be one of/],
    ];
    for (const [body, message] of cases) {
      const res = await post('/v1/deltas', body);
      assert.equal(res.status, 422, JSON.stringify(res.json));
      assert.match(res.json.error.message, message);
    }
    assert.deepEqual(await versionsOf('ln'), [1, 2]);
    assert.deepEqual(await versionsOf('bf'), [1]);
  });
});
