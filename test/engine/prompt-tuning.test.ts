/**
 * Prompt tuning and P-tuning through the real ONNX Runtime engine on Llama, Qwen2 and GPT-2, both
 * attention kernels, against the independent oracle (test/oracle/kinds/prompt-tuning.ts): prompt
 * logits, rows of every kind in one pass, and greedy decoding through the KV cache. Virtual tokens
 * are fed as the scheduler feeds them: ids -(k + 1) before the row's own tokens.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelRuntime, type RowSlots } from '../../src/engine/model-runtime.js';
import { maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora, type TinyFamily } from '../oracle/checkpoints.js';
import { oraclePromptTuning, writeTinyPromptTuning } from '../oracle/kinds/prompt-tuning.js';
import { argmax, oracleForward, oracleGreedy, type OracleDelta, type OracleLora, type OracleWeights } from '../oracle/transformer.js';

const VOCAB = 300;
const PROMPTS = [
  [1, 17, 42, 7, 250, 99, 3, 128, 64, 5],
  [1, 200, 11, 11, 290, 33, 71, 8, 150, 42],
];
const NEW_TOKENS = 6;
const PT_TOKENS = 5; // prompt tuning's virtual tokens
const P_TOKENS = 3; // P-tuning's
const LORA_TARGETS: Record<TinyFamily, string[]> = { llama: ['q_proj', 'v_proj', 'down_proj'], qwen2: ['q_proj', 'v_proj', 'down_proj'], gpt2: ['c_attn', 'c_fc'] };
const HIDDEN = 64;

/** The row's token list as the scheduler builds it: n virtual tokens -(k + 1), then the prompt. */
const withVirtual = (n: number, prompt: number[]) => [...Array.from({ length: n }, (_, k) => -(k + 1)), ...prompt];

// Rows' slots: prompt tuning in slot 1, P-tuning in slot 0, LoRA in slot 1.
const BASE: RowSlots = {};
const PT: RowSlots = { prompt_tuning: 1 };
const P: RowSlots = { p_tuning: 0 };
const LORA: RowSlots = { lora: 1 };
const P_LORA: RowSlots = { p_tuning: 0, lora: 1 };

for (const family of ['llama', 'qwen2', 'gpt2'] as const) for (const attention of ['matmul', 'group-query'] as const) {
  describe(`prompt tuning / P-tuning vs oracle: ${family} (attention: ${attention})`, () => {
    let rt: ModelRuntime;
    let config: any;
    let weights: OracleWeights;
    let lora: OracleLora;
    let pt: OracleDelta;
    let p: OracleDelta;

    before(async () => {
      const root = tempDir('deltaserve-prompt-');
      const modelDir = path.join(root, 'model');
      writeTinyCheckpoint(modelDir, family, { seed: 41 });
      writeTinyPromptTuning(path.join(root, 'pt'), { peftType: 'PROMPT_TUNING', numVirtualTokens: PT_TOKENS, tokenDim: HIDDEN, seed: 2 });
      writeTinyPromptTuning(path.join(root, 'p'), { peftType: 'P_TUNING', numVirtualTokens: P_TOKENS, tokenDim: HIDDEN, seed: 3, encoderHiddenSize: 32 });
      writeTinyLora(path.join(root, 'lora'), family, { seed: 4, r: 4, alpha: 8, targetModules: LORA_TARGETS[family], baseDir: modelDir });
      config = readConfig(modelDir);
      weights = loadWeightsF32(modelDir);
      [pt, p, lora] = [oraclePromptTuning(path.join(root, 'pt')), oraclePromptTuning(path.join(root, 'p')), loadOracleLora(path.join(root, 'lora'))];
      rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 4, maxContext: 40, deltaSlots: 2, maxRank: 8, maxVirtualTokens: 8, threads: 1, attention });
      writeSlot(rt, 1, readDelta(rt, path.join(root, 'pt'), 'pt'));
      writeSlot(rt, 0, readDelta(rt, path.join(root, 'p'), 'p'));
      writeSlot(rt, 1, readDelta(rt, path.join(root, 'lora'), 'lora'));
    });
    after(() => rt?.release());

    /** Logits of every own position of one row prefilled alone at `row`. */
    const alone = async (row: number, n: number, prompt: number[], slots: RowSlots) => {
      const logits = await rt.forward({ firstRow: row, tokens: [withVirtual(n, prompt)], pastLengths: [0], slots: [slots], logits: 'all' });
      return logits.subarray(n * VOCAB);
    };
    const checkPrompt = (logits: Float32Array, expected: Float32Array[], what: string) => {
      assert.equal(logits.length, expected.length * VOCAB, what);
      expected.forEach((row, pos) => {
        const diff = maxAbsDiff(logits.subarray(pos * VOCAB, (pos + 1) * VOCAB), row);
        assert.ok(diff <= 1e-4, `${what} position ${pos}: max abs diff ${diff}`);
      });
    };

    it('prompt-tuned and P-tuned prompt logits match the oracle within 1e-4, and differ from the base', async () => {
      const base = oracleForward(config, weights, PROMPTS[0]!);
      for (const [what, n, slots, delta] of [['prompt tuning', PT_TOKENS, PT, pt], ['P-tuning', P_TOKENS, P, p]] as const) {
        const expected = oracleForward(config, weights, PROMPTS[0]!, undefined, [delta]);
        checkPrompt(await alone(0, n, PROMPTS[0]!, slots), expected, what);
        assert.ok(maxAbsDiff(expected.at(-1)!, base.at(-1)!) > 1e-2, `${what} visibly changes the logits`);
      }
    });

    it('a virtual-token row stacked with a LoRA matches the oracle with both (the LoRA acts on the virtual tokens too)', async () => {
      checkPrompt(await alone(0, P_TOKENS, PROMPTS[1]!, P_LORA), oracleForward(config, weights, PROMPTS[1]!, lora, [p]), 'P-tuning + LoRA');
    });

    it('base, prompt-tuned, LoRA and P-tuned+LoRA rows in one padded pass each equal the row alone within 1e-5', async () => {
      const rows: [number, number[], RowSlots][] = [[0, PROMPTS[0]!, BASE], [PT_TOKENS, PROMPTS[1]!, PT], [0, PROMPTS[1]!, LORA], [P_TOKENS, PROMPTS[0]!, P_LORA]];
      const seq = Math.max(...rows.map(([n, prompt]) => n + prompt.length));
      const mixed = await rt.forward({ firstRow: 0, tokens: rows.map(([n, prompt]) => withVirtual(n, prompt)), pastLengths: rows.map(() => 0), slots: rows.map(([, , s]) => s), logits: 'all' });
      for (const [r, [n, prompt, slots]] of rows.entries()) {
        const own = mixed.subarray((r * seq + n) * VOCAB, (r * seq + n + prompt.length) * VOCAB);
        const diff = maxAbsDiff(own, await alone(3, n, prompt, slots));
        assert.ok(diff <= 1e-5, `row ${r} (${JSON.stringify(slots)}): max abs diff ${diff}`);
      }
    });

    it('a slot poisoned past validation (NaN, 1e30) spoils only its own row: the others are bit-identical to a clean run', async () => {
      const rows: [number, number[], RowSlots][] = [[PT_TOKENS, PROMPTS[0]!, PT], [0, PROMPTS[1]!, BASE], [P_TOKENS, PROMPTS[1]!, { p_tuning: 1 }], [P_TOKENS, PROMPTS[0]!, P]];
      const seq = Math.max(...rows.map(([n, prompt]) => n + prompt.length));
      const pass = async (slot1: Float32Array) => {
        for (let row = 0; row < 4; row++) rt.cache.clearRow(row);
        writeSlot(rt, 1, { kind: 'p_tuning', name: 'x', tensors: new Map([['p_tuning.embeddings', slot1]]), virtualTokens: P_TOKENS, summary: {}, warnings: [] });
        const logits = await rt.forward({ firstRow: 0, tokens: rows.map(([n, prompt]) => withVirtual(n, prompt)), pastLengths: rows.map(() => 0), slots: rows.map(([, , s]) => s), logits: 'all' });
        return rows.map((_, r) => [...new Uint32Array(logits.slice(r * seq * VOCAB, (r + 1) * seq * VOCAB).buffer)]);
      };
      const clean = await pass(new Float32Array(8 * HIDDEN).fill(0.25));
      for (const poison of [NaN, 1e30]) {
        const bad = await pass(new Float32Array(8 * HIDDEN).fill(poison));
        for (const r of [0, 1, 3]) assert.deepEqual(bad[r], clean[r], `row ${r} with slot 1 holding ${poison}`);
        assert.notDeepEqual(bad[2], clean[2], `the poisoned row itself changes (${poison})`);
      }
      for (let row = 0; row < 4; row++) rt.cache.clearRow(row); // as the scheduler does before a row is reused
    });

    it(`greedy ${NEW_TOKENS}-token decode through the KV cache equals oracleGreedy (prompt-tuned, P-tuned and base rows together)`, async () => {
      const rows: [number, RowSlots, OracleDelta[]][] = [[PT_TOKENS, PT, [pt]], [P_TOKENS, P, [p]], [0, BASE, []]];
      const prompt = PROMPTS[1]!;
      const slots = rows.map(([, s]) => s);
      let logits = await rt.forward({ firstRow: 0, tokens: rows.map(([n]) => withVirtual(n, prompt)), pastLengths: rows.map(() => 0), slots, logits: 'last' });
      const generated: number[][] = rows.map(() => []);
      for (let step = 0; step < NEW_TOKENS; step++) {
        const next = rows.map((_, r) => argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB)));
        next.forEach((t, r) => generated[r]!.push(t));
        if (step === NEW_TOKENS - 1) break;
        logits = await rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: rows.map(([n]) => n + prompt.length + step), slots, logits: 'last' });
      }
      rows.forEach(([n, , deltas], r) => assert.deepEqual(generated[r], oracleGreedy(config, weights, prompt, NEW_TOKENS, undefined, deltas), `row ${r} (${n} virtual tokens)`));
      assert.notDeepEqual(generated[0], generated[2], 'prompt tuning changes the continuation');
    });
  });
}
