/**
 * Prefix tuning through the real ONNX Runtime engine against the oracle written from PEFT's source
 * (test/oracle/kinds/prefix-tuning.ts), on Llama (grouped-query), Qwen2 and GPT-2, both attention
 * kernels: prompt logits, rows of every kind in one pass, and greedy decoding through the KV cache.
 * The prefix is put in the cache as the scheduler does (writePrefix of the kind's prefixKeyValues).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { prefixTuning } from '../../src/deltas/kinds/prefix-tuning.js';
import { ModelRuntime, type RowSlots } from '../../src/engine/model-runtime.js';
import { maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora, type TinyCheckpointOptions, type TinyFamily } from '../oracle/checkpoints.js';
import { loadOraclePrefix, writeTinyPrefixTuning } from '../oracle/kinds/prefix-tuning.js';
import { argmax, oracleForward, oracleGreedy, type OracleDelta, type OracleLora, type OracleWeights } from '../oracle/transformer.js';

interface Case {
  family: TinyFamily;
  checkpoint: TinyCheckpointOptions;
  prefixProjection?: boolean;
}

const CASES: Case[] = [
  { family: 'llama', checkpoint: { seed: 41 } },
  { family: 'qwen2', checkpoint: { seed: 42, transformersVersion: 4 }, prefixProjection: true },
  { family: 'gpt2', checkpoint: { seed: 43 } },
];
const LORA_TARGETS: Record<TinyFamily, string[]> = { llama: ['q_proj', 'v_proj', 'down_proj'], qwen2: ['k_proj', 'o_proj'], gpt2: ['c_attn', 'c_fc'] };
const VOCAB = 300;
const N = 5; // virtual tokens
const PROMPTS = [
  [1, 17, 42, 7, 250, 99, 3, 128, 64, 5],
  [1, 200, 11, 11, 290, 33, 71, 8, 150, 42],
];
const NEW_TOKENS = 6;
const PREFIX_SLOT = 1;
const LORA_SLOT = 0;

for (const c of CASES) for (const attention of ['matmul', 'group-query'] as const) {
  describe(`prefix tuning vs the PEFT oracle: ${c.family}${c.prefixProjection ? ' (prefix_projection)' : ''}, attention ${attention}`, () => {
    let rt: ModelRuntime;
    let config: any;
    let weights: OracleWeights;
    let prefix: OracleDelta;
    let lora: OracleLora;

    before(async () => {
      const root = tempDir('deltaserve-prefix-');
      const modelDir = path.join(root, 'model');
      writeTinyCheckpoint(modelDir, c.family, c.checkpoint);
      writeTinyPrefixTuning(path.join(root, 'prefix'), { seed: 3, numVirtualTokens: N, prefixProjection: c.prefixProjection, encoderHiddenSize: 24, baseDir: modelDir });
      writeTinyLora(path.join(root, 'lora'), c.family, { seed: 9, r: 4, alpha: 8, targetModules: LORA_TARGETS[c.family], baseDir: modelDir });
      config = readConfig(modelDir);
      weights = loadWeightsF32(modelDir);
      prefix = loadOraclePrefix(path.join(root, 'prefix'), config);
      lora = loadOracleLora(path.join(root, 'lora'));
      rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 5, maxContext: 32, deltaSlots: 2, maxRank: 8, maxVirtualTokens: 8, threads: 1, attention });
      const delta = readDelta(rt, path.join(root, 'prefix'), 'tiny-prefix');
      assert.equal(delta.virtualTokens, N);
      writeSlot(rt, PREFIX_SLOT, delta);
      writeSlot(rt, LORA_SLOT, readDelta(rt, path.join(root, 'lora'), 'tiny-lora'));
    });
    after(() => rt?.release());

    /** A cache row made ready for its first token: cleared, and with the prefix written when it has one. */
    const prepareRow = (row: number, slots: RowSlots) => {
      rt.cache.clearRow(row);
      if (slots['prefix_tuning'] === undefined) return 0;
      const stacks = rt.stacks.get('prefix_tuning')!;
      const s = slots['prefix_tuning'];
      rt.cache.writePrefix(row, prefixTuning.prefixKeyValues!((t) => stacks.range(t, s, s + 1), N, rt.arch), N);
      return N;
    };
    const prefill = async (firstRow: number, rows: number[][], slots: RowSlots[]) => {
      const pastLengths = slots.map((s, r) => prepareRow(firstRow + r, s));
      return { pastLengths, logits: await rt.forward({ firstRow, tokens: rows, pastLengths, slots, logits: 'all' }) };
    };
    const checkRows = (logits: Float32Array, expected: Float32Array[], what: string) => {
      assert.equal(logits.length, expected.length * VOCAB);
      expected.forEach((row, pos) => {
        const diff = maxAbsDiff(logits.subarray(pos * VOCAB, (pos + 1) * VOCAB), row);
        assert.ok(diff <= 1e-4, `${what} position ${pos}: max abs diff ${diff}`);
      });
    };

    it('prompt logits after the prefix match the oracle within 1e-4 (and differ from the base)', async () => {
      const { logits } = await prefill(0, [PROMPTS[0]!], [{ prefix_tuning: PREFIX_SLOT }]);
      const expected = oracleForward(config, weights, PROMPTS[0]!, undefined, [prefix]);
      checkRows(logits, expected, 'prefix');
      const base = oracleForward(config, weights, PROMPTS[0]!);
      assert.ok(maxAbsDiff(expected.at(-1)!, base.at(-1)!) > 1e-2, 'the prefix visibly changes the logits');
    });

    it('a prefix row stacked with a LoRA matches the oracle with both deltas within 1e-4', async () => {
      const { logits } = await prefill(0, [PROMPTS[1]!], [{ prefix_tuning: PREFIX_SLOT, lora: LORA_SLOT }]);
      checkRows(logits, oracleForward(config, weights, PROMPTS[1]!, lora, [prefix]), 'prefix + LoRA');
    });

    // Prefills run one row at a time when a row has a past (the prefix), as the scheduler runs
    // them (GroupQueryAttention takes a multi-row pass with a past only one token per row); decode
    // steps then carry every row together.
    const prefillEach = async (rows: number[][], slots: RowSlots[], firstRow = 0) => {
      const out: { pastLength: number; logits: Float32Array }[] = [];
      for (let r = 0; r < rows.length; r++) {
        const { pastLengths, logits } = await prefill(firstRow + r, [rows[r]!], [slots[r]!]);
        out.push({ pastLength: pastLengths[0]! + rows[r]!.length, logits: logits.subarray(logits.length - VOCAB) });
      }
      return out;
    };
    const decode = (firstRow: number, tokens: number[], pastLengths: number[], slots: RowSlots[]) => rt.forward({ firstRow, tokens: tokens.map((t) => [t]), pastLengths, slots, logits: 'last' });

    it('decode steps of rows with the prefix, none, a LoRA, and both in one pass each equal the row alone within 1e-5', async () => {
      const slots: RowSlots[] = [{ prefix_tuning: PREFIX_SLOT }, {}, { lora: LORA_SLOT }, { prefix_tuning: PREFIX_SLOT, lora: LORA_SLOT }];
      const rows = [PROMPTS[0]!, PROMPTS[1]!, PROMPTS[0]!, PROMPTS[1]!];
      const forced = [[7, 8], [9, 10], [11, 12], [13, 14]];
      const past = (await prefillEach(rows, slots)).map((p) => p.pastLength);
      const together = [];
      for (let step = 0; step < 2; step++) together.push(await decode(0, forced.map((f) => f[step]!), past.map((p) => p + step), slots));
      for (let r = 0; r < rows.length; r++) {
        const [alone] = await prefillEach([rows[r]!], [slots[r]!], 4);
        for (let step = 0; step < 2; step++) {
          const logits = await decode(4, [forced[r]![step]!], [alone!.pastLength + step], [slots[r]!]);
          const diff = maxAbsDiff(together[step]!.subarray(r * VOCAB, (r + 1) * VOCAB), logits);
          assert.ok(diff <= 1e-5, `row ${r} (${JSON.stringify(slots[r])}) step ${step}: max abs diff ${diff}`);
        }
      }
    });

    it(`greedy ${NEW_TOKENS}-token decode through the KV cache equals oracleGreedy (prefix row beside a base row)`, async () => {
      const slots: RowSlots[] = [{ prefix_tuning: PREFIX_SLOT }, {}];
      const first = await prefillEach(PROMPTS, slots);
      let next = first.map((p) => argmax(p.logits));
      const generated: number[][] = [[], []];
      for (let step = 0; step < NEW_TOKENS; step++) {
        next.forEach((t, r) => generated[r]!.push(t));
        if (step === NEW_TOKENS - 1) break;
        const logits = await decode(0, next, first.map((p) => p.pastLength + step), slots);
        next = [0, 1].map((r) => argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB)));
      }
      const withPrefix = oracleGreedy(config, weights, PROMPTS[0]!, NEW_TOKENS, undefined, [prefix]);
      assert.deepEqual(generated[0], withPrefix, 'prefix row');
      assert.deepEqual(generated[1], oracleGreedy(config, weights, PROMPTS[1]!, NEW_TOKENS), 'base row');
      assert.notDeepEqual(withPrefix, oracleGreedy(config, weights, PROMPTS[0]!, NEW_TOKENS), 'the prefix changes the continuation');
    });
  });
}
