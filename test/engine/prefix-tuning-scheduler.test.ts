/**
 * Prefix tuning through the scheduler on the tiny Llama fixture: the prefix goes into the row's
 * cache at admission, so a request prefills its own prompt and nothing more; prompt logprobs and
 * greedy continuations match the PEFT oracle; rows of every kind share passes; the context must
 * hold the prefix too.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ParsedDelta } from '../../src/deltas/kind.js';
import { ModelRuntime, type ForwardPass } from '../../src/engine/model-runtime.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { greedyRequest, type GenerateEvent, type GenerateRequest, type TokenLogprob } from '../../src/engine/types.js';
import { FIXTURE, logSoftmax, readDelta, tempDir } from '../helpers.js';
import { loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { loadOraclePrefix, writeTinyPrefixTuning } from '../oracle/kinds/prefix-tuning.js';
import { oracleForward, oracleGreedy, type OracleDelta, type OracleWeights } from '../oracle/transformer.js';

const BASE = path.join(FIXTURE, 'base');
const N = 6;
const PROMPT = [3, 17, 42, 7, 250, 99, 3, 128, 64, 5, 400, 11];

interface Outcome {
  tokens: number[];
  prompt: (TokenLogprob | null)[];
  finish?: string;
  error?: string;
}

describe('Scheduler: prefix-tuning rows', () => {
  let rt: ModelRuntime;
  let config: any;
  let weights: OracleWeights;
  let prefix: OracleDelta;
  const deltas = new Map<string, ParsedDelta>();
  let passes: ForwardPass[] = [];

  before(async () => {
    const dir = path.join(tempDir('deltaserve-prefix-sched-'), 'prefix');
    writeTinyPrefixTuning(dir, { seed: 17, numVirtualTokens: N, baseDir: BASE });
    config = readConfig(BASE);
    weights = loadWeightsF32(BASE);
    prefix = loadOraclePrefix(dir, config);
    rt = await ModelRuntime.create({ modelDir: BASE, cacheDir: tempDir(), device: 'cpu', maxRows: 3, maxContext: 64, deltaSlots: 2, maxRank: 8, maxVirtualTokens: 8, threads: 1 });
    deltas.set('pfx', readDelta(rt, dir, 'pfx'));
    deltas.set('lora', readDelta(rt, path.join(FIXTURE, 'lora_all_r8'), 'lora'));
    // Every pass the scheduler runs, to count what it prefills.
    const forward = rt.forward.bind(rt);
    rt.forward = (pass) => {
      passes.push(pass);
      return forward(pass);
    };
  });
  after(() => rt?.release());

  /** Runs requests until the scheduler is idle; returns what each request received. */
  async function run(requests: GenerateRequest[], prefillChunk: number): Promise<Map<string, Outcome>> {
    const out = new Map<string, Outcome>(requests.map((r) => [r.id, { tokens: [], prompt: [] }]));
    const emit = (e: GenerateEvent) => {
      const entry = out.get(e.id)!;
      if (e.type === 'token') entry.tokens.push(e.token);
      if (e.type === 'prompt') entry.prompt.push(...e.logprobs);
      if (e.type === 'done') entry.finish = e.finishReason;
      if (e.type === 'error') entry.error = `${e.code}: ${e.message}`;
    };
    const scheduler = new Scheduler(rt, { lookup: (n) => deltas.get(n) }, emit, { prefillChunk, maxQueue: 100 });
    for (const r of requests) scheduler.submit(r);
    for (let i = 0; !scheduler.idle && i < 10_000; i++) await scheduler.step();
    return out;
  }

  it('prefills only the request’s own prompt, after the prefix, and continues as the oracle does', async () => {
    passes = [];
    const out = (await run([greedyRequest('p', PROMPT, ['pfx'], 8)], 64)).get('p')!;
    assert.equal(out.error, undefined);
    const want = oracleGreedy(config, weights, PROMPT, 8, undefined, [prefix]);
    assert.deepEqual(out.tokens, want);
    assert.notDeepEqual(want, oracleGreedy(config, weights, PROMPT, 8), 'the prefix changes the continuation');
    const [first, ...decodes] = passes;
    assert.deepEqual(first!.tokens, [PROMPT], 'one prefill pass of exactly the prompt');
    assert.deepEqual(first!.pastLengths, [N], 'the prompt starts after the n prefix positions');
    assert.deepEqual(decodes.map((p) => p.tokens[0]!.length), Array(7).fill(1), 'then one token per step');
    assert.deepEqual(decodes.map((p) => p.pastLengths[0]), Array.from({ length: 7 }, (_, i) => N + PROMPT.length + i));
  });

  it('prompt logprobs (in 5-token chunks) cover the request’s own tokens and match the oracle within 1e-4', async () => {
    passes = [];
    const request = { ...greedyRequest('e', PROMPT, ['pfx'], 0), promptLogprobs: true };
    const out = (await run([request], 5)).get('e')!;
    assert.equal(passes.reduce((n, p) => n + p.tokens[0]!.length, 0), PROMPT.length, 'the chunks add up to the prompt');
    assert.equal(out.prompt.length, PROMPT.length);
    assert.equal(out.prompt[0], null);
    const expected = oracleForward(config, weights, PROMPT, undefined, [prefix]);
    for (let i = 1; i < PROMPT.length; i++) {
      const want = logSoftmax(expected[i - 1]!)[PROMPT[i]!]!;
      const got = out.prompt[i]!;
      assert.equal(got.token, PROMPT[i]);
      assert.ok(Math.abs(got.logprob - want) <= 1e-4, `position ${i}: got ${got.logprob}, want ${want}`);
    }
  });

  it('prefix, base, LoRA and prefix+LoRA requests through 3 rows and 4-token chunks equal each alone', async () => {
    const kinds = [['pfx'], [], ['lora'], ['pfx', 'lora'], ['pfx'], []];
    const requests = kinds.map((d, i) => greedyRequest(`m${i}`, PROMPT.slice(0, 5 + i).map((t) => (t + 31 * i) % 512), d, 3 + (i % 4)));
    const together = await run(requests, 4);
    for (const r of requests) {
      const alone = (await run([r], 64)).get(r.id)!;
      assert.deepEqual(together.get(r.id), alone, r.id);
      assert.equal(alone.tokens.length, r.maxTokens, r.id);
    }
    const withPrefix = requests[4]!;
    assert.deepEqual(together.get(withPrefix.id)!.tokens, oracleGreedy(config, weights, withPrefix.promptIds, withPrefix.maxTokens, undefined, [prefix]));
  });

  it('a request whose prefix, prompt and max_tokens pass the context is refused; one that fits runs', async () => {
    const prompt = Array.from({ length: 50 }, (_, i) => (i * 7) % 512);
    const out = await run([greedyRequest('long', prompt, ['pfx'], 64 - 50 - N + 1), greedyRequest('fits', prompt, ['pfx'], 64 - 50 - N)], 64);
    assert.match(out.get('long')!.error ?? '', /^context_length_exceeded: .*6 virtual tokens/);
    assert.equal(out.get('fits')!.error, undefined);
    assert.equal(out.get('fits')!.tokens.length, 64 - 50 - N);
  });
});
