/**
 * A PEFT prefix-tuning adapter over HTTP on the tiny Llama fixture: uploaded and registered at
 * startup, downloaded byte-identical, versioned, and served as PEFT computes it (echoed prompt
 * logprobs within 1e-4 and greedy continuations of the oracle); bad uploads are 422s naming the
 * field or tensor and store nothing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { encodeSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, logSoftmax, tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { loadOraclePrefix, writeTinyPrefixTuning } from '../oracle/kinds/prefix-tuning.js';
import { oracleForward, oracleGreedy, type OracleDelta } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE = path.join(FIXTURE, 'base');
const MODEL = readConfig(BASE);
const WEIGHTS = loadWeightsF32(BASE);
const N = 7;
const PROMPT = [5, 300, 12, 77, 9, 140, 33, 2, 410, 61];

function adapter(seed: number): { dir: string; config: Buffer; weights: Buffer; oracle: OracleDelta } {
  const dir = path.join(tempDir('deltaserve-prefix-http-'), `seed${seed}`);
  writeTinyPrefixTuning(dir, { seed, numVirtualTokens: N, baseDir: BASE });
  const read = (file: string) => fs.readFileSync(path.join(dir, file));
  return { dir, config: read('adapter_config.json'), weights: read('adapter_model.safetensors'), oracle: loadOraclePrefix(dir, MODEL) };
}

function form(name: string, config: Uint8Array, weights: Uint8Array): FormData {
  const f = new FormData();
  f.set('name', name);
  f.set('adapter_config', new Blob([config as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  f.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  return f;
}

describe('prefix tuning over HTTP', () => {
  const first = adapter(21);
  const second = adapter(22);
  let server: RunningServer;
  before(async () => {
    const config = ConfigSchema.parse({ port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: BASE, modelName: 'tiny-llama', maxContext: 64, maxVirtualTokens: 8, threads: 1, maxRank: 8, delta: [`startup=${first.dir}`] });
    server = await startServer(config);
    await server.ready;
  });
  after(() => server?.close());

  const post = async (route: string, body: FormData | Record<string, unknown>) => {
    const init = body instanceof FormData ? { body } : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } };
    const res = await fetch(`${server.url}${route}`, { method: 'POST', ...init });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const complete = (model: string, extra: Record<string, unknown>) => post('/v1/completions', { model, prompt: PROMPT, temperature: 0, return_token_ids: true, ...extra });
  const versions = async (id: string) => ((await (await fetch(`${server.url}/v1/deltas/${id}`)).json()) as Json).versions?.map((v: Json) => v.version);

  it('an upload is described as a prefix_tuning delta of the addition family', async () => {
    const res = await post('/v1/deltas', form('mine', first.config, first.weights));
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.equal(res.json.kind, 'prefix_tuning');
    assert.equal(res.json.family, 'addition');
    assert.equal(res.json.virtual_tokens, N);
    assert.deepEqual(res.json.summary, { virtualTokens: N, layers: 2, params: N * 2 * 2 * 32, prefixProjection: false });
    assert.deepEqual(res.json.warnings, []);
  });

  it('echoed prompt logprobs cover the prompt alone and match the oracle within 1e-4', async () => {
    const expected = oracleForward(MODEL, WEIGHTS, PROMPT, undefined, [first.oracle]);
    for (const model of ['mine', 'startup']) {
      const res = await complete(model, { max_tokens: 0, echo: true, logprobs: 0 });
      assert.equal(res.status, 200, JSON.stringify(res.json));
      const lp = res.json.choices[0].logprobs;
      assert.equal(lp.token_logprobs.length, PROMPT.length);
      assert.equal(lp.token_logprobs[0], null);
      for (let i = 1; i < PROMPT.length; i++) {
        const want = logSoftmax(expected[i - 1]!)[PROMPT[i]!]!;
        assert.ok(Math.abs(lp.token_logprobs[i] - want) <= 1e-4, `${model} position ${i}: got ${lp.token_logprobs[i]}, want ${want}`);
      }
      assert.equal(res.json.usage.prompt_tokens, PROMPT.length, 'virtual tokens are not the prompt');
    }
  });

  it('greedy continuations equal the oracle’s; a new version is served by name, the old one by @1', async () => {
    const want = oracleGreedy(MODEL, WEIGHTS, PROMPT, 10, undefined, [first.oracle]);
    assert.notDeepEqual(want, oracleGreedy(MODEL, WEIGHTS, PROMPT, 10), 'the prefix changes the continuation');
    for (const model of ['mine', 'startup']) assert.deepEqual((await complete(model, { max_tokens: 10 })).json.choices[0].token_ids, want, model);
    assert.equal((await post('/v1/deltas', form('mine', second.config, second.weights))).json.version, 2);
    const v2 = oracleGreedy(MODEL, WEIGHTS, PROMPT, 10, undefined, [second.oracle]);
    assert.notDeepEqual(v2, want);
    assert.deepEqual((await complete('mine', { max_tokens: 10 })).json.choices[0].token_ids, v2);
    assert.deepEqual((await complete('mine@1', { max_tokens: 10 })).json.choices[0].token_ids, want);
  });

  it('files download byte-identical to the upload', async () => {
    const download = async (file: string) => Buffer.from(await (await fetch(`${server.url}/v1/deltas/mine@1/files/${file}`)).arrayBuffer());
    assert.deepEqual(await download('adapter_config.json'), first.config);
    assert.deepEqual(await download('adapter_model.safetensors'), first.weights);
  });

  it('the context must hold the prefix, the prompt and max_tokens', async () => {
    const res = await complete('mine', { max_tokens: 64 - PROMPT.length - N + 1 });
    assert.equal(res.status, 400, JSON.stringify(res.json));
    assert.match(res.json.error.message, /after the deltas' 7 virtual tokens/);
  });

  it('bad uploads are 422s naming the field or tensor, and store nothing', async () => {
    const before = await versions('mine');
    const config = (patch: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...JSON.parse(first.config.toString()), ...patch }));
    const embeddings = (shape: number[], data: Float32Array) => encodeSafetensors({ prompt_embeddings: { dtype: 'F32', shape, data } });
    const cases: [Uint8Array, Uint8Array, RegExp][] = [
      [config({ num_virtual_tokens: 9 }), first.weights, /num_virtual_tokens 9 exceeds the server's max virtual tokens 8/],
      [config({ token_dim: 64 }), first.weights, /token_dim 64 does not match/],
      [config({ num_layers: 3 }), first.weights, /num_layers 3 does not match the backbone's 2 layers/],
      [config({ task_type: 'SEQ_CLS' }), first.weights, /task_type 'SEQ_CLS' is not served/],
      [first.config, embeddings([N, 64], new Float32Array(N * 64)), /prompt_embeddings: shape \[7,64\], expected \[7, 128\]/],
      [first.config, embeddings([N, 128], new Float32Array(N * 128).fill(Infinity)), /prompt_embeddings: value at index 0 .*not finite/],
      [first.config, encodeSafetensors({ other: { dtype: 'F32', shape: [1], data: new Float32Array(1) } }), /no prompt_embeddings tensor/],
    ];
    for (const [configBytes, weightBytes, message] of cases) {
      const res = await post('/v1/deltas', form('mine', configBytes, weightBytes));
      assert.equal(res.status, 422, JSON.stringify(res.json));
      assert.match(res.json.error.message, message);
    }
    assert.deepEqual(await versions('mine'), before);
  });
});
