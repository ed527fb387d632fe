/**
 * Prompt tuning and P-tuning through HTTP on the Llama fixture: uploaded (and registered at
 * startup), downloadable byte-identical, versioned, and served — echoed prompt logprobs and greedy
 * continuations against the oracle, beside base and LoRA requests — with bad uploads refused.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigSchema } from '../../src/config.js';
import { encodeSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURE, loadReference, logSoftmax, tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { oraclePromptTuning, writeTinyPromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { oracleForward, oracleGreedy, type OracleDelta } from '../oracle/transformer.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const ref = loadReference();
const BASE_DIR = path.join(FIXTURE, 'base');
const config = readConfig(BASE_DIR);
const weights = loadWeightsF32(BASE_DIR);
const EOS = config.eos_token_id as number;
const PT_TOKENS = 4;
const root = tempDir('deltaserve-prompt-http-');
const dirs = { pt: path.join(root, 'pt'), pt2: path.join(root, 'pt2'), p: path.join(root, 'p') };
writeTinyPromptTuning(dirs.pt, { peftType: 'PROMPT_TUNING', numVirtualTokens: PT_TOKENS, tokenDim: 64, seed: 21 });
writeTinyPromptTuning(dirs.pt2, { peftType: 'PROMPT_TUNING', numVirtualTokens: PT_TOKENS, tokenDim: 64, seed: 22 });
writeTinyPromptTuning(dirs.p, { peftType: 'P_TUNING', numVirtualTokens: 3, tokenDim: 64, seed: 23, encoderHiddenSize: 32 });
const files = (dir: string) => ({ config: fs.readFileSync(path.join(dir, 'adapter_config.json')), weights: fs.readFileSync(path.join(dir, 'adapter_model.safetensors')) });

function form(name: string, config: Uint8Array, weights: Uint8Array): FormData {
  const f = new FormData();
  f.set('name', name);
  f.set('adapter_config', new Blob([config as Uint8Array<ArrayBuffer>]), 'adapter_config.json');
  f.set('adapter_model', new Blob([weights as Uint8Array<ArrayBuffer>]), 'adapter_model.safetensors');
  return f;
}

/** Greedy tokens as the server returns them: the oracle's, up to (not including) the first EOS. */
function expectedGreedy(prompt: number[], steps: number, deltas: OracleDelta[]): number[] {
  const tokens = oracleGreedy(config, weights, prompt, steps, undefined, deltas);
  return tokens.includes(EOS) ? tokens.slice(0, tokens.indexOf(EOS)) : tokens;
}

describe('prompt tuning / P-tuning over HTTP', () => {
  let server: RunningServer;
  const pt = oraclePromptTuning(dirs.pt);
  const p = oraclePromptTuning(dirs.p);

  before(async () => {
    server = await startServer(ConfigSchema.parse({
      port: 0, cacheDir: tempDir(), dataDir: tempDir(), model: BASE_DIR, modelName: 'tiny-llama', maxContext: 64, threads: 1, maxRank: 8, maxVirtualTokens: 8, logLevel: 'warn',
      delta: [`ptune=${dirs.p}`, `lora=${path.join(FIXTURE, 'lora_all_r8')}`],
    }));
    await server.ready;
  });
  after(() => server?.close());

  const post = async (route: string, body: unknown) => {
    const res = await fetch(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const upload = async (body: FormData) => {
    const res = await fetch(`${server.url}/v1/deltas`, { method: 'POST', body });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const greedy = (model: string, prompt: number[], max_tokens = 10) => post('/v1/completions', { model, prompt, max_tokens, temperature: 0, return_token_ids: true });
  const versions = async (id: string) => ((await (await fetch(`${server.url}/v1/deltas/${id}`)).json()) as Json).versions?.map((v: Json) => v.version);

  it('an uploaded prompt-tuning adapter is stored as kind prompt_tuning (family addition) and downloads byte-identical', async () => {
    const { config: c, weights: w } = files(dirs.pt);
    const res = await upload(form('style', c, w));
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.deepEqual([res.json.kind, res.json.family, res.json.virtual_tokens, res.json.version], ['prompt_tuning', 'addition', PT_TOKENS, 1]);
    assert.deepEqual(res.json.summary, { virtualTokens: PT_TOKENS, params: PT_TOKENS * 64 });
    assert.equal(res.json.sha256, crypto.createHash('sha256').update(c).update(w).digest('hex'));
    for (const [file, bytes] of [['adapter_config.json', c], ['adapter_model.safetensors', w]] as const) {
      const got = Buffer.from(await (await fetch(`${server.url}/v1/deltas/style@1/files/${file}`)).arrayBuffer());
      assert.deepEqual(got, bytes, file);
    }
    const listed = ((await (await fetch(`${server.url}/v1/deltas/ptune`)).json()) as Json);
    assert.deepEqual([listed.kind, listed.family, listed.virtual_tokens, listed.summary.encoder], ['p_tuning', 'addition', 3, 'MLP']);
  });

  it('echoed prompt logprobs cover only the prompt (first null) and match the oracle within 1e-4', async () => {
    for (const ids of ref.input_ids) {
      const { status, json } = await post('/v1/completions', { model: 'style', prompt: ids, max_tokens: 0, echo: true, logprobs: 0, temperature: 0 });
      assert.equal(status, 200, JSON.stringify(json));
      const lp = json.choices[0].logprobs.token_logprobs;
      assert.equal(lp.length, ids.length);
      assert.equal(lp[0], null);
      const expected = oracleForward(config, weights, ids, undefined, [pt]);
      for (let i = 1; i < ids.length; i++) {
        const want = logSoftmax(expected[i - 1]!)[ids[i]!]!;
        assert.ok(Math.abs(lp[i] - want) <= 1e-4, `pos ${i}: got ${lp[i]}, want ${want}`);
      }
      assert.equal(json.usage.prompt_tokens, ids.length, 'usage counts the request\'s own tokens');
    }
  });

  it('greedy continuations of the uploaded and the startup-registered delta equal the oracle; base, LoRA and both kinds batched together equal each alone', async () => {
    const requests: [string, number[]][] = ref.input_ids.flatMap((ids) => ['style', 'ptune', 'tiny-llama', 'lora'].map((m): [string, number[]] => [m, ids]));
    const alone: Json[] = [];
    for (const [model, ids] of requests) alone.push((await greedy(model, ids)).json);
    const together = await Promise.all(requests.map(([model, ids]) => greedy(model, ids)));
    requests.forEach(([model, ids], k) => {
      assert.equal(together[k]!.status, 200, JSON.stringify(together[k]!.json));
      assert.deepEqual(together[k]!.json.choices[0].token_ids, alone[k].choices[0].token_ids, `${model} ${k}`);
      if (model === 'style' || model === 'ptune') assert.deepEqual(alone[k].choices[0].token_ids, expectedGreedy(ids, 10, [model === 'style' ? pt : p]), `${model} ${k}`);
    });
    assert.notDeepEqual(alone[0].choices[0].token_ids, alone[2].choices[0].token_ids, 'prompt tuning changes the continuation');
  });

  it('a new version is served under the name while name@1 keeps the first', async () => {
    const { config: c, weights: w } = files(dirs.pt2);
    assert.equal((await upload(form('style', c, w))).json.version, 2);
    const ids = ref.input_ids[0]!;
    assert.deepEqual((await greedy('style', ids)).json.choices[0].token_ids, expectedGreedy(ids, 10, [oraclePromptTuning(dirs.pt2)]));
    assert.deepEqual((await greedy('style@1', ids)).json.choices[0].token_ids, expectedGreedy(ids, 10, [pt]));
  });

  it('the virtual tokens count against the context: prompt + max_tokens must fit in context - n', async () => {
    const ids = ref.input_ids[0]!;
    assert.equal((await greedy('style@1', ids, 64 - PT_TOKENS - ids.length)).status, 200);
    const over = await greedy('style@1', ids, 64 - PT_TOKENS - ids.length + 1);
    assert.equal(over.status, 400);
    assert.equal(over.json.error.code, 'context_length_exceeded');
    assert.match(over.json.error.message, /after the deltas' 4 virtual tokens/);
    assert.equal((await greedy('tiny-llama', ids, 64 - ids.length)).status, 200);
  });

  it('bad uploads are refused with 422 naming the field or tensor, and store nothing', async () => {
    const { config: c, weights: w } = files(dirs.pt);
    const patched = (patch: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...JSON.parse(c.toString()), ...patch }));
    const tensor = (shape: number[], fill = 0.5, extra: Record<string, Float32Array> = {}) => encodeSafetensors({
      prompt_embeddings: { dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) },
      ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, { dtype: 'F32' as const, shape: [v.length], data: v }])),
    });
    const cases: [Uint8Array, Uint8Array, RegExp][] = [
      [patched({ num_virtual_tokens: 9 }), tensor([9, 64]), /num_virtual_tokens 9 exceeds max virtual tokens 8/],
      [patched({ token_dim: 32 }), tensor([PT_TOKENS, 32]), /token_dim 32 does not match the model's hidden size 64/],
      [patched({ task_type: 'SEQ_CLS' }), w, /task_type 'SEQ_CLS' is not supported/],
      [c, tensor([PT_TOKENS + 1, 64]), /prompt_embeddings: shape \[5,64\], expected \[4, 64\]/],
      [c, tensor([PT_TOKENS, 64], NaN), /prompt_embeddings: value at \[0, 0\] is not finite/],
      [c, tensor([PT_TOKENS, 64], 0.5, { 'base_model.model.norm.weight': new Float32Array(64) }), /base_model\.model\.norm\.weight: names a parameter of the frozen backbone/],
    ];
    for (const [cfg, weightsBytes, message] of cases) {
      const res = await upload(form('broken', cfg, weightsBytes));
      assert.equal(res.status, 422, JSON.stringify(res.json));
      assert.match(res.json.error.message, message);
    }
    assert.equal((await fetch(`${server.url}/v1/deltas/broken`)).status, 404);
    assert.deepEqual(await versions('style'), [1, 2]);
  });
});
