/**
 * IA3 deltas through the real ONNX Runtime engine on every family PEFT applies IA3 to (Llama,
 * Qwen2, GPT-2: all three have PEFT default targets) and both attention kernels, against the
 * oracle built from PEFT's source (test/oracle/kinds/ia3.ts): prompt logits, rows of IA3 beside
 * base and LoRA rows in one pass, and greedy decoding through the KV cache.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { RowSlots } from '../../src/engine/model-runtime.js';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { argmax } from '../../src/engine/sampler.js';
import { maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora, type TinyFamily } from '../oracle/checkpoints.js';
import { loadOracleIa3, writeTinyIa3 } from '../oracle/kinds/ia3.js';
import { oracleForward, oracleGreedy, type OracleDelta, type OracleLora, type OracleWeights } from '../oracle/transformer.js';

/**
 * Adapter 'wide' targets every projection, with some scaled on the input (feed-forward): in
 * attention and in the MLP (GPT-2's list `c_proj` matches attn.c_proj and mlp.c_proj, since PEFT
 * matches feed-forward names with a bare endswith). Adapter 'defaults' leaves both fields null.
 */
const WIDE: Record<TinyFamily, { targets: string[]; feedforward: string[] }> = {
  llama: { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], feedforward: ['o_proj', 'down_proj'] },
  qwen2: { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], feedforward: ['k_proj', 'up_proj'] },
  gpt2: { targets: ['c_attn', 'c_proj', 'c_fc'], feedforward: ['c_proj'] },
};
const FAMILIES: TinyFamily[] = ['llama', 'qwen2', 'gpt2'];
const VOCAB = 300;
const PROMPTS = [
  [1, 17, 42, 7, 250, 99, 3, 128, 64, 5],
  [1, 200, 11, 11, 290, 33, 71, 8, 150, 42],
  [1, 5, 9, 260, 14, 77, 2, 31, 199, 100],
  [1, 88, 140, 6, 6, 230, 45, 19, 3, 71],
];
const NEW_TOKENS = 6;
/** Slots: the LoRA in lora slot 0, the two IA3 deltas in ia3 slots 1 and 2 (slot 0 stays empty). */
const LORA: RowSlots = { lora: 0 };
const WIDE_ROW: RowSlots = { ia3: 1 };
const DEFAULTS_ROW: RowSlots = { ia3: 2 };

for (const family of FAMILIES) for (const attention of ['matmul', 'group-query'] as const) {
  describe(`IA3 vs the PEFT oracle: ${family} (attention: ${attention})`, () => {
    let rt: ModelRuntime;
    let config: any;
    let weights: OracleWeights;
    let lora: OracleLora;
    let wide: OracleDelta;
    let defaults: OracleDelta;

    before(async () => {
      const root = tempDir('deltaserve-ia3-');
      const modelDir = path.join(root, 'model');
      writeTinyCheckpoint(modelDir, family, { seed: 41 });
      const written = writeTinyIa3(path.join(root, 'wide'), { baseDir: modelDir, seed: 3, targetModules: WIDE[family].targets, feedforwardModules: WIDE[family].feedforward });
      writeTinyIa3(path.join(root, 'defaults'), { baseDir: modelDir, seed: 4 });
      writeTinyLora(path.join(root, 'lora'), family, { seed: 5, r: 4, alpha: 8, targetModules: WIDE[family].targets, baseDir: modelDir });
      config = readConfig(modelDir);
      weights = loadWeightsF32(modelDir);
      lora = loadOracleLora(path.join(root, 'lora'));
      wide = loadOracleIa3(path.join(root, 'wide'), modelDir);
      defaults = loadOracleIa3(path.join(root, 'defaults'), modelDir);
      rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 4, maxContext: 32, deltaSlots: 3, maxRank: 8, threads: 1, attention });
      const parsed = readDelta(rt, path.join(root, 'wide'), 'wide');
      assert.deepEqual([parsed.summary['modules'], parsed.summary['feedforward']], [written.modules, written.feedforward]);
      writeSlot(rt, 1, parsed);
      writeSlot(rt, 2, readDelta(rt, path.join(root, 'defaults'), 'defaults'));
      writeSlot(rt, 0, readDelta(rt, path.join(root, 'lora'), 'lora'));
    });
    after(() => rt?.release());

    const prompt = (row: number, slots: RowSlots, firstRow = 0) => rt.forward({ firstRow, tokens: [PROMPTS[row]!], pastLengths: [0], slots: [slots], logits: 'all' });
    const checkPrompt = (logits: Float32Array, expected: Float32Array[], what: string) => {
      assert.equal(logits.length, expected.length * VOCAB);
      expected.forEach((row, pos) => {
        const diff = maxAbsDiff(logits.subarray(pos * VOCAB, (pos + 1) * VOCAB), row);
        assert.ok(diff <= 1e-4, `${what} position ${pos}: max abs diff ${diff}`);
      });
    };

    for (const [label, row, slots, delta] of [['wide', 0, WIDE_ROW, () => wide], ['defaults', 1, DEFAULTS_ROW, () => defaults]] as const) {
      it(`'${label}' prompt logits match the oracle within 1e-4 (and differ from the base)`, async () => {
        const expected = oracleForward(config, weights, PROMPTS[row]!, undefined, [delta()]);
        checkPrompt(await prompt(row, slots), expected, label);
        const base = oracleForward(config, weights, PROMPTS[row]!);
        assert.ok(maxAbsDiff(expected.at(-1)!, base.at(-1)!) > 1e-2, 'the IA3 delta visibly changes the logits');
      });
    }

    it('rows of IA3 beside base and LoRA rows in one pass equal each row alone within 1e-5', async () => {
      const slots = [{}, LORA, WIDE_ROW, DEFAULTS_ROW];
      const mixed = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0, 0], slots, logits: 'all' });
      const n = PROMPTS[0]!.length * VOCAB;
      for (let r = 0; r < 4; r++) {
        const alone = await prompt(r, slots[r]!, r);
        const diff = maxAbsDiff(mixed.subarray(r * n, (r + 1) * n), alone);
        assert.ok(diff <= 1e-5, `row ${r} (${JSON.stringify(slots[r])}): max abs diff ${diff}`);
      }
      checkPrompt(mixed.subarray(0, n), oracleForward(config, weights, PROMPTS[0]!), 'base row beside IA3 rows');
    });

    // PEFT has no model with both; deltaserve composes them in hook order (the LoRA sees the
    // IA3-scaled input, the IA3 output scale applies to base + LoRA), which the oracle follows too.
    it('a row stacking a LoRA and an IA3 delta matches the oracle applying both', async () => {
      const logits = await prompt(1, { ...LORA, ...WIDE_ROW });
      checkPrompt(logits, oracleForward(config, weights, PROMPTS[1]!, lora, [wide]), 'lora+ia3');
    });

    it('a slot poisoned past validation (NaN, ±Infinity) spoils only its own row', async () => {
      const stacks = rt.stacks.get('ia3')!;
      for (const spec of stacks.specs) stacks.range(spec.name, 0, 1).forEach((_, i, v) => (v[i] = [NaN, Infinity, -Infinity][i % 3]!));
      const slots = [{}, LORA, WIDE_ROW, { ia3: 0 }];
      const mixed = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0, 0], slots, logits: 'all' });
      const n = PROMPTS[0]!.length * VOCAB;
      for (let r = 0; r < 3; r++) {
        const diff = maxAbsDiff(mixed.subarray(r * n, (r + 1) * n), await prompt(r, slots[r]!, r));
        assert.ok(diff <= 1e-5, `row ${r} beside the poisoned row: max abs diff ${diff}`);
      }
      assert.ok(mixed.subarray(3 * n).some((v) => !Number.isFinite(v)), 'the poisoned row itself is not finite');
      for (const spec of stacks.specs) stacks.range(spec.name, 0, 1).fill(1);
      rt.cache.clearRow(3); // as the scheduler clears a row before reusing it: its keys/values are NaN now
    });

    it(`greedy ${NEW_TOKENS}-token decode through the KV cache equals oracleGreedy (base, LoRA and IA3 rows)`, async () => {
      const slots = [{}, LORA, WIDE_ROW, DEFAULTS_ROW];
      let logits = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0, 0], slots, logits: 'last' });
      const generated: number[][] = PROMPTS.map(() => []);
      for (let step = 0; step < NEW_TOKENS; step++) {
        const next = PROMPTS.map((_, r) => argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB)));
        next.forEach((t, r) => generated[r]!.push(t));
        if (step === NEW_TOKENS - 1) break;
        const past = PROMPTS[0]!.length + step;
        logits = await rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: PROMPTS.map(() => past), slots, logits: 'last' });
      }
      assert.deepEqual(generated[0], oracleGreedy(config, weights, PROMPTS[0]!, NEW_TOKENS), 'base row');
      assert.deepEqual(generated[1], oracleGreedy(config, weights, PROMPTS[1]!, NEW_TOKENS, lora), 'LoRA row');
      assert.deepEqual(generated[2], oracleGreedy(config, weights, PROMPTS[2]!, NEW_TOKENS, undefined, [wide]), "'wide' IA3 row");
      assert.deepEqual(generated[3], oracleGreedy(config, weights, PROMPTS[3]!, NEW_TOKENS, undefined, [defaults]), "'defaults' IA3 row");
    });
  });
}
