/**
 * Every delta kind in one batch: rows of each kind (virtual-token rows included), base rows and a
 * composed row run through the scheduler together, in prefill and in decode with the KV cache,
 * and each row gets what it gets alone (max |Δ logprob| ≤ 1e-5, the same greedy tokens), and what
 * the oracle says it should get.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deltaKinds, type ParsedDelta } from '../../src/deltas/kind.js';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import type { GenerateEvent, GenerateRequest } from '../../src/engine/types.js';
import { logSoftmax, readDelta, tempDir } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora } from '../oracle/checkpoints.js';
import { bitfitOracle, writeTinyBitfit } from '../oracle/kinds/bitfit.js';
import { oracleDora, writeTinyDora } from '../oracle/kinds/dora.js';
import { loadOracleIa3, writeTinyIa3 } from '../oracle/kinds/ia3.js';
import { writeTinyBottleneck } from '../oracle/kinds/bottleneck-checkpoint.js';
import { oracleBottleneck } from '../oracle/kinds/bottleneck.js';
import { lnTuningOracle, writeTinyLnTuning } from '../oracle/kinds/ln-tuning.js';
import { loadOraclePrefix, writeTinyPrefixTuning } from '../oracle/kinds/prefix-tuning.js';
import { oraclePromptTuning, writeTinyPromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { oracleForward, oracleGreedy, type OracleDelta, type OracleLora, type OracleWeights } from '../oracle/transformer.js';

const NEW_TOKENS = 5;

/** One row of the batch: the deltas it stacks and how the oracle applies them. */
interface Row {
  id: string;
  deltas: string[];
  lora?: OracleLora;
  oracle: OracleDelta[];
  prompt: number[];
}

interface Outcome {
  tokens: number[];
  tokenLogprobs: number[];
  promptLogprobs: (number | null)[];
  error?: string;
}

describe('one batch holding every delta kind', () => {
  let rt: ModelRuntime;
  let config: any;
  let weights: OracleWeights;
  const deltas = new Map<string, ParsedDelta>();
  const rows: Row[] = [];

  before(async () => {
    const root = tempDir('deltaserve-all-kinds-');
    const modelDir = path.join(root, 'model');
    writeTinyCheckpoint(modelDir, 'llama', { seed: 41 });
    config = readConfig(modelDir);
    weights = loadWeightsF32(modelDir);
    rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 16, maxContext: 64, deltaSlots: 3, maxRank: 8, threads: 1, maxVirtualTokens: 8, maxBottleneck: 16 });
    const dir = (name: string) => path.join(root, name);
    const add = (name: string) => deltas.set(name, readDelta(rt, dir(name), name));
    writeTinyLora(dir('lora'), 'llama', { seed: 3, r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], baseDir: modelDir });
    writeTinyBitfit(dir('bitfit'), 'llama', { baseDir: modelDir, seed: 4 });
    writeTinyLnTuning(dir('ln'), 'llama', { baseDir: modelDir, seed: 5 });
    writeTinyPromptTuning(dir('prompt'), { peftType: 'PROMPT_TUNING', numVirtualTokens: 4, tokenDim: config.hidden_size, seed: 6 });
    writeTinyPromptTuning(dir('ptuning'), { peftType: 'P_TUNING', numVirtualTokens: 3, tokenDim: config.hidden_size, seed: 7, encoderHiddenSize: 16 });
    writeTinyPrefixTuning(dir('prefix'), { numVirtualTokens: 5, baseDir: modelDir, seed: 8 });
    writeTinyBottleneck(dir('bottleneck'), { baseDir: modelDir, preset: 'double_seq_bn', config: { reduction_factor: 8 }, seed: 9 });
    writeTinyDora(dir('dora'), 'llama', { seed: 10, r: 4, alpha: 8, targetModules: ['k_proj', 'o_proj', 'up_proj'], baseDir: modelDir });
    writeTinyIa3(dir('ia3'), { baseDir: modelDir, seed: 11, targetModules: ['q_proj', 'k_proj', 'o_proj', 'up_proj', 'down_proj'], feedforwardModules: ['o_proj', 'down_proj'] });
    for (const name of ['lora', 'dora', 'ia3', 'bitfit', 'ln', 'prompt', 'ptuning', 'prefix', 'bottleneck']) add(name);
    const lora = loadOracleLora(dir('lora'));
    const prompt = (i: number) => Array.from({ length: 6 + (i % 4) }, (_, j) => (i * 31 + j * 17 + 1) % 300);
    const row = (id: string, names: string[], oracle: OracleDelta[], withLora = false) => rows.push({ id, deltas: names, oracle, lora: withLora ? lora : undefined, prompt: prompt(rows.length) });
    row('base', [], []);
    row('lora', ['lora'], [], true);
    row('dora', ['dora'], [oracleDora(dir('dora'), config, weights)]);
    row('ia3', ['ia3'], [loadOracleIa3(dir('ia3'), modelDir)]);
    row('bitfit', ['bitfit'], [bitfitOracle(dir('bitfit'), weights)]);
    row('ln', ['ln'], [lnTuningOracle(dir('ln'), config, weights)]);
    row('prompt', ['prompt'], [oraclePromptTuning(dir('prompt'))]);
    row('ptuning', ['ptuning'], [oraclePromptTuning(dir('ptuning'))]);
    row('prefix', ['prefix'], [loadOraclePrefix(dir('prefix'), config)]);
    row('bottleneck', ['bottleneck'], [oracleBottleneck(dir('bottleneck'), config)]);
    row('prompt+lora', ['prompt', 'lora'], [oraclePromptTuning(dir('prompt'))], true);
    row('base-2', [], []);
  });
  after(() => rt?.release());

  it('covers every kind the server serves', () => {
    assert.deepEqual([...new Set([...deltas.values()].map((d) => d.kind))].sort(), deltaKinds().map((k) => k.name).sort());
  });

  /** Runs the rows' requests through one scheduler; returns each request's outcome. */
  async function run(which: Row[], options: { prefillChunk: number; runtime?: ModelRuntime; later?: Row[] }): Promise<Map<string, Outcome>> {
    const runtime = options.runtime ?? rt;
    const out = new Map<string, Outcome>(which.map((r) => [r.id, { tokens: [], tokenLogprobs: [], promptLogprobs: [] }]));
    const emit = (e: GenerateEvent) => {
      const o = out.get(e.id)!;
      if (e.type === 'token') {
        o.tokens.push(e.token);
        o.tokenLogprobs.push(e.logprob);
      } else if (e.type === 'prompt') o.promptLogprobs.push(...e.logprobs.map((l) => l?.logprob ?? null));
      else if (e.type === 'error') o.error = e.message;
    };
    for (const r of options.later ?? []) out.set(r.id, { tokens: [], tokenLogprobs: [], promptLogprobs: [] });
    const enableKind = (kind: string) => runtime.enableKinds([kind]);
    const scheduler = new Scheduler(runtime, { lookup: (n) => deltas.get(n) }, emit, { prefillChunk: options.prefillChunk, maxQueue: 100, enableKind });
    for (const r of which) scheduler.submit(request(r));
    // Rows submitted once the first ones decode: their kinds are hooked in while those run.
    for (let i = 0; i < 2; i++) await scheduler.step();
    for (const r of options.later ?? []) scheduler.submit(request(r));
    for (let i = 0; i < 10_000; i++) {
      if (scheduler.idle) {
        if (!scheduler.loads && !scheduler.stats.waiting) break;
        await new Promise((resolve) => setTimeout(resolve, 5));
        continue;
      }
      await scheduler.step();
    }
    return out;
  }

  const request = (r: Row): GenerateRequest => ({
    id: r.id,
    promptIds: r.prompt,
    deltas: r.deltas,
    maxTokens: NEW_TOKENS,
    sampling: { temperature: 0, topP: 1, topK: 0 },
    stopTokenIds: [],
    promptLogprobs: true,
    tokenLogprobs: true,
    topLogprobs: 0,
  });

  const close = (a: (number | null)[], b: (number | null)[], tol: number, what: string) => {
    assert.equal(a.length, b.length, what);
    a.forEach((v, i) => assert.ok((v === null && b[i] === null) || Math.abs(v! - b[i]!) <= tol, `${what}[${i}]: ${v} vs ${b[i]}`));
  };

  for (const prefillChunk of [64, 4]) {
    it(`every row equals itself alone, in prefill and in decode (prefill chunks of ${prefillChunk})`, async () => {
      const together = await run(rows, { prefillChunk });
      for (const r of rows) {
        const alone = (await run([r], { prefillChunk: 64 })).get(r.id)!;
        const got = together.get(r.id)!;
        assert.equal(got.error, undefined, `${r.id}: ${got.error}`);
        assert.deepEqual(got.tokens, alone.tokens, `${r.id} tokens`);
        close(got.promptLogprobs, alone.promptLogprobs, 1e-5, `${r.id} prompt logprobs`);
        close(got.tokenLogprobs, alone.tokenLogprobs, 1e-5, `${r.id} token logprobs`);
      }
    });
  }

  it('kinds hooked in on demand: a LoRA-only engine serves every kind once asked, rows in flight unaffected by the switch', async () => {
    const root = tempDir('deltaserve-on-demand-');
    const lazy = await ModelRuntime.create({ ...rt.options, cacheDir: path.join(root, 'cache'), initialKinds: ['lora'] });
    try {
      assert.deepEqual([...lazy.stacks.keys()], ['lora']);
      const first = rows.filter((r) => r.id === 'base' || r.id === 'lora');
      const later = rows.filter((r) => !first.includes(r));
      const expected = await run(rows, { prefillChunk: 64 });
      const got = await run(first, { prefillChunk: 64, runtime: lazy, later });
      for (const r of rows) {
        const g = got.get(r.id)!;
        assert.equal(g.error, undefined, `${r.id}: ${g.error}`);
        assert.deepEqual(g.tokens, expected.get(r.id)!.tokens, `${r.id} tokens`);
        close(g.tokenLogprobs, expected.get(r.id)!.tokenLogprobs, 1e-5, `${r.id} token logprobs`);
      }
      assert.deepEqual([...lazy.stacks.keys()].sort(), deltaKinds().map((k) => k.name).sort());
    } finally {
      await lazy.release();
    }
  });

  it('a kind that cannot be hooked in ends only the requests that need it', async () => {
    const root = tempDir('deltaserve-kinds-refused-');
    const loraOnly = await ModelRuntime.create({ ...rt.options, cacheDir: path.join(root, 'cache'), deltaKinds: ['lora'] });
    try {
      const which = rows.filter((r) => ['base', 'lora', 'ia3'].includes(r.id));
      const got = await run(which, { prefillChunk: 64, runtime: loraOnly });
      const expected = await run(which, { prefillChunk: 64 });
      assert.match(got.get('ia3')!.error ?? '', /ia3 cannot be served here/);
      for (const id of ['base', 'lora']) assert.deepEqual(got.get(id)!.tokens, expected.get(id)!.tokens, id);
    } finally {
      await loraOnly.release();
    }
  });

  it('and each row is what the oracle computes from the reference implementations', async () => {
    const together = await run(rows, { prefillChunk: 64 });
    for (const r of rows) {
      const got = together.get(r.id)!;
      assert.deepEqual(got.tokens, oracleGreedy(config, weights, r.prompt, NEW_TOKENS, r.lora, r.oracle), `${r.id} greedy`);
      const logits = oracleForward(config, weights, r.prompt, r.lora, r.oracle);
      const expected = [null, ...r.prompt.slice(1).map((t, i) => logSoftmax(logits[i]!)[t]!)];
      close(got.promptLogprobs, expected, 1e-4, `${r.id} prompt logprobs vs oracle`);
    }
  });
});
