/**
 * Prompt tuning through the scheduler: the virtual tokens' keys/values are computed on a delta
 * set's first request and reused (PrefixCache) by later ones, whose prefill then runs only their
 * own tokens; prompt logprobs cover the request's own tokens only; the virtual tokens count
 * against the context. Every result is checked against the oracle.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ParsedDelta } from '../../src/deltas/kind.js';
import { ModelRuntime, type ForwardPass } from '../../src/engine/model-runtime.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { greedyRequest, type GenerateEvent, type GenerateRequest, type TokenLogprob } from '../../src/engine/types.js';
import { logSoftmax, readDelta, tempDir } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora } from '../oracle/checkpoints.js';
import { oraclePromptTuning, writeTinyPromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { oracleForward, oracleGreedy, type OracleDelta, type OracleLora, type OracleWeights } from '../oracle/transformer.js';

interface Outcome {
  tokens: number[];
  prompt: (TokenLogprob | null)[];
  finish?: string;
  error?: string;
}

/**
 * A scheduler over `deltas` whose runs share its prefix cache: run() submits requests, steps until
 * idle and returns every forward pass it made; `out` holds each request's outcome.
 */
function harness(rt: ModelRuntime, deltas: Map<string, ParsedDelta>, prefillChunk = 64) {
  const out = new Map<string, Outcome>();
  const emit = (e: GenerateEvent) => {
    const entry = out.get(e.id)!;
    if (e.type === 'token') entry.tokens.push(e.token);
    if (e.type === 'prompt') entry.prompt.push(...e.logprobs);
    if (e.type === 'done') entry.finish = e.finishReason;
    if (e.type === 'error') entry.error = `${e.code}: ${e.message}`;
  };
  const scheduler = new Scheduler(rt, { lookup: (n) => deltas.get(n) }, emit, { prefillChunk, maxQueue: 100 });
  return {
    out,
    async run(requests: GenerateRequest[]) {
      const passes = record(rt);
      try {
        for (const r of requests) {
          out.set(r.id, { tokens: [], prompt: [] });
          scheduler.submit(r);
        }
        for (let i = 0; !scheduler.idle && i < 10_000; i++) await scheduler.step();
      } finally {
        passes.stop();
      }
      return passes.calls;
    },
  };
}

/** Wraps runtime.forward to record each pass's rows, tokens and past lengths. */
function record(rt: ModelRuntime) {
  const original = rt.forward;
  const calls: Pick<ForwardPass, 'tokens' | 'pastLengths'>[] = [];
  rt.forward = (pass) => {
    calls.push({ tokens: pass.tokens.map((t) => [...t]), pastLengths: [...pass.pastLengths] });
    return original.call(rt, pass);
  };
  return { calls, stop: () => void (rt.forward = original) };
}

const withLogprobs = (r: GenerateRequest): GenerateRequest => ({ ...r, promptLogprobs: true, tokenLogprobs: true });
const N = 6;

for (const attention of ['matmul', 'group-query'] as const) {
  describe(`prompt tuning through the scheduler (llama, attention: ${attention})`, () => {
    let rt: ModelRuntime;
    let config: any;
    let weights: OracleWeights;
    let pt: OracleDelta;
    let p: OracleDelta;
    let lora: OracleLora;
    const deltas = new Map<string, ParsedDelta>();

    before(async () => {
      const root = tempDir('deltaserve-prompt-sched-');
      const modelDir = path.join(root, 'model');
      writeTinyCheckpoint(modelDir, 'llama', { seed: 51 });
      writeTinyPromptTuning(path.join(root, 'pt'), { peftType: 'PROMPT_TUNING', numVirtualTokens: N, tokenDim: 64, seed: 6 });
      writeTinyPromptTuning(path.join(root, 'p'), { peftType: 'P_TUNING', numVirtualTokens: 4, tokenDim: 64, seed: 7, encoderHiddenSize: 16 });
      writeTinyLora(path.join(root, 'lora'), 'llama', { seed: 8, r: 4, alpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj'], baseDir: modelDir });
      config = readConfig(modelDir);
      weights = loadWeightsF32(modelDir);
      [pt, p, lora] = [oraclePromptTuning(path.join(root, 'pt')), oraclePromptTuning(path.join(root, 'p')), loadOracleLora(path.join(root, 'lora'))];
      rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 3, maxContext: 32, deltaSlots: 2, maxRank: 4, maxVirtualTokens: 8, threads: 1, attention });
      for (const name of ['pt', 'p', 'lora']) deltas.set(name, readDelta(rt, path.join(root, name), name));
    });
    after(() => rt?.release());

    const prompt = [1, 17, 42, 7, 250, 99, 3, 128];

    it("a delta's second request reuses its virtual tokens' keys/values: its prefill runs only its own tokens, and its results equal the first's", async () => {
      const h = harness(rt, deltas);
      const first = await h.run([withLogprobs(greedyRequest('a', prompt, ['pt'], 5))]);
      const second = await h.run([withLogprobs(greedyRequest('b', prompt, ['pt'], 5))]);
      const virtual = Array.from({ length: N }, (_, k) => -(k + 1));
      assert.deepEqual(first[0], { tokens: [[...virtual, ...prompt]], pastLengths: [0] }, 'the first request prefills n virtual tokens and its prompt');
      assert.deepEqual(second[0], { tokens: [prompt], pastLengths: [N] }, 'the second prefills its prompt alone, after n cached positions');
      // The measurement the issue asks for: tokens prefilled per request after the delta's first use.
      const prefilled = (passes: typeof first) => passes[0]!.tokens.flat().length;
      console.log(`# prefill tokens (${attention}): prompt ${prompt.length}; prompt-tuned first request ${prefilled(first)}, second request ${prefilled(second)}`);
      assert.equal(prefilled(second), prompt.length);
      const [a, b] = [h.out.get('a')!, h.out.get('b')!];
      assert.deepEqual(b.tokens, a.tokens);
      assert.deepEqual(a.tokens, oracleGreedy(config, weights, prompt, 5, undefined, [pt]));
      const expected = oracleForward(config, weights, prompt, undefined, [pt]);
      for (const got of [a.prompt, b.prompt]) {
        assert.equal(got.length, prompt.length, 'one entry per own prompt token, none for the virtual tokens');
        assert.equal(got[0], null, "the first prompt token's logprob is null, as without virtual tokens");
        for (let i = 1; i < prompt.length; i++) {
          const want = logSoftmax(expected[i - 1]!)[prompt[i]!]!;
          assert.ok(Math.abs(got[i]!.logprob - want) <= 1e-4, `position ${i}: ${got[i]!.logprob} vs ${want}`);
          assert.ok(Math.abs(got[i]!.logprob - a.prompt[i]!.logprob) <= 1e-5, `position ${i}: second ${got[i]!.logprob} vs first ${a.prompt[i]!.logprob}`);
        }
      }
    });

    it('the prefix cache is keyed by the whole delta set: prompt tuning + LoRA computes its own virtual keys/values', async () => {
      const h = harness(rt, deltas);
      const alone = await h.run([greedyRequest('a', prompt, ['pt'], 4)]);
      const stacked = await h.run([greedyRequest('b', prompt, ['pt', 'lora'], 4)]);
      assert.equal(alone[0]!.tokens[0]!.length, N + prompt.length);
      assert.equal(stacked[0]!.tokens[0]!.length, N + prompt.length, 'no reuse of the virtual tokens computed without the LoRA');
      assert.deepEqual(h.out.get('b')!.tokens, oracleGreedy(config, weights, prompt, 4, lora, [pt]));
      assert.notDeepEqual(h.out.get('b')!.tokens, h.out.get('a')!.tokens);
    });

    it('requests of every kind through 3 rows and 5-token prefill chunks (virtual tokens split across chunks, prefixes reused) equal each request alone and the oracle', async () => {
      const mixes = [['pt'], [], ['p'], ['lora'], ['pt', 'lora'], ['pt'], ['p', 'lora'], ['p']];
      const requests = mixes.map((d, i) => greedyRequest(`r${i}`, Array.from({ length: 3 + ((i * 5) % 9) }, (_, j) => (i * 37 + j * 11) % 300), d, 2 + ((i * 3) % 5)));
      const together = harness(rt, deltas, 5);
      const passes = await together.run(requests);
      for (const r of requests) {
        const alone = harness(rt, deltas);
        await alone.run([r]);
        assert.deepEqual(together.out.get(r.id), alone.out.get(r.id), `${r.id} (${r.deltas.join('+') || 'base'})`);
        const virtual = r.deltas.includes('pt') ? [pt] : r.deltas.includes('p') ? [p] : [];
        assert.deepEqual(alone.out.get(r.id)!.tokens, oracleGreedy(config, weights, r.promptIds, r.maxTokens, r.deltas.includes('lora') ? lora : undefined, virtual), r.id);
      }
      assert.ok(passes.some((pass) => pass.tokens.some((t) => t.length === 5 && t.every((id) => id < 0))), 'some chunk held virtual tokens only');
      assert.ok(passes.some((pass) => pass.tokens.some((t, r) => t[0]! >= 0 && pass.pastLengths[r] === N)), 'some request started after reused virtual tokens');
    });

    it('the virtual tokens count against the context: n + prompt + max_tokens beyond it ends the request with context_length_exceeded', async () => {
      const long = Array.from({ length: 20 }, (_, j) => (j * 7 + 3) % 300);
      const h = harness(rt, deltas);
      await h.run([greedyRequest('over', long, ['pt'], 7), greedyRequest('fits', long, [], 7), greedyRequest('edge', long, ['pt'], 6)]);
      assert.match(h.out.get('over')!.error ?? '', /^context_length_exceeded: delta 'pt' adds 6 virtual tokens; .* exceeds the context of 32/);
      assert.equal(h.out.get('fits')!.finish, 'length');
      assert.equal(h.out.get('edge')!.finish, 'length');
      assert.equal(h.out.get('edge')!.tokens.length, 6);
    });
  });
}
