/**
 * DoRA (a PEFT LoRA with use_dora) through the real ONNX Runtime engine on every family PEFT
 * applies it to, against the oracle written from PEFT's dora.py (test/oracle/kinds/dora.ts):
 * prompt logits, rows of base / LoRA / DoRA in one pass, greedy decoding through the KV cache, and
 * rows beside a DoRA row left bit for bit as they are beside a plain LoRA.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ParsedDelta } from '../../src/deltas/kind.js';
import { ModelRuntime, type RowSlots } from '../../src/engine/model-runtime.js';
import { maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig, writeTinyCheckpoint, writeTinyLora, type TinyCheckpointOptions, type TinyFamily } from '../oracle/checkpoints.js';
import { oracleDora, writeTinyDora } from '../oracle/kinds/dora.js';
import { argmax, oracleForward, oracleGreedy, type OracleDelta, type OracleLora, type OracleWeights } from '../oracle/transformer.js';

interface Case {
  label: string;
  family: TinyFamily;
  checkpoint: TinyCheckpointOptions;
  useRslora?: boolean;
  magnitudeKey?: 'saved' | 'weight';
}

// Llama (no biases), Qwen2 (q/k/v biases, which DoRA leaves unscaled), GPT-2 (Conv1D, fan_in_fan_out, biases everywhere).
const CASES: Case[] = [
  { label: 'llama', family: 'llama', checkpoint: { seed: 41 } },
  { label: 'llama, BF16 sharded weights, magnitudes saved as .weight', family: 'llama', checkpoint: { seed: 42, dtype: 'BF16', sharded: true }, magnitudeKey: 'weight' },
  { label: 'qwen2, rsLoRA', family: 'qwen2', checkpoint: { seed: 43 }, useRslora: true },
  { label: 'gpt2', family: 'gpt2', checkpoint: { seed: 44 } },
];

const TARGETS: Record<TinyFamily, string[]> = {
  llama: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  qwen2: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  gpt2: ['c_attn', 'c_proj', 'c_fc'],
};

const VOCAB = 300;
const PROMPTS = [
  [1, 17, 42, 7, 250, 99, 3, 128, 64, 5],
  [1, 200, 11, 11, 290, 33, 71, 8, 150, 42],
  [1, 5, 77, 140, 2, 260, 19, 19, 88, 31],
];
const NEW_TOKENS = 6;
const [LORA_SLOT, DORA_SLOT, SPARE_SLOT] = [0, 1, 2];
const slotsOf = (kinds: ('base' | number)[]): RowSlots[] => kinds.map((k): RowSlots => (k === 'base' ? {} : { lora: k }));
/** Bit patterns, so that -0 and NaN compare exactly too. */
const bits = (x: Float32Array) => [...new Uint32Array(x.buffer, x.byteOffset, x.length)];

for (const c of CASES) for (const attention of ['matmul', 'group-query'] as const) {
  describe(`DoRA, ModelRuntime vs PEFT oracle: ${c.label} (attention: ${attention})`, () => {
    let rt: ModelRuntime;
    let config: any;
    let weights: OracleWeights;
    let lora: OracleLora;
    let dora: OracleDelta;
    let doraDelta: ParsedDelta;
    let loraDelta: ParsedDelta;
    let root: string;

    before(async () => {
      root = tempDir('deltaserve-dora-');
      const modelDir = path.join(root, 'model');
      writeTinyCheckpoint(modelDir, c.family, c.checkpoint);
      const adapter = { seed: 5, r: 8, alpha: 16, targetModules: TARGETS[c.family], useRslora: c.useRslora, baseDir: modelDir };
      // The same factors, with and without DoRA's magnitudes.
      writeTinyLora(path.join(root, 'lora'), c.family, adapter);
      writeTinyDora(path.join(root, 'dora'), c.family, { ...adapter, magnitudeKey: c.magnitudeKey });
      config = readConfig(modelDir);
      weights = loadWeightsF32(modelDir);
      lora = loadOracleLora(path.join(root, 'lora'));
      dora = oracleDora(path.join(root, 'dora'), config, weights);
      rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 6, maxContext: 32, deltaSlots: 3, maxRank: 16, threads: 1, attention });
      loraDelta = readDelta(rt, path.join(root, 'lora'), 'tiny-lora');
      doraDelta = readDelta(rt, path.join(root, 'dora'), 'tiny-dora');
      assert.deepEqual(doraDelta.summary, { rank: 8, modules: loraDelta.summary['modules']!, dora: true });
      writeSlot(rt, LORA_SLOT, loraDelta);
      writeSlot(rt, DORA_SLOT, doraDelta);
    });
    after(async () => {
      await rt?.release();
      fs.rmSync(root, { recursive: true, force: true });
    });

    const checkPrompt = (logits: Float32Array, expected: Float32Array[], what: string) => {
      assert.equal(logits.length, expected.length * VOCAB);
      expected.forEach((row, pos) => {
        const diff = maxAbsDiff(logits.subarray(pos * VOCAB, (pos + 1) * VOCAB), row);
        assert.ok(diff <= 1e-4, `${what} position ${pos}: max abs diff ${diff}`);
      });
    };

    it('DoRA prompt logits match the oracle within 1e-4 (and differ from the same factors without DoRA)', async () => {
      const logits = await rt.forward({ firstRow: 0, tokens: [PROMPTS[0]!], pastLengths: [0], slots: slotsOf([DORA_SLOT]), logits: 'all' });
      const expected = oracleForward(config, weights, PROMPTS[0]!, undefined, [dora]);
      checkPrompt(logits, expected, 'dora');
      const plain = oracleForward(config, weights, PROMPTS[0]!, lora);
      assert.ok(maxAbsDiff(expected.at(-1)!, plain.at(-1)!) > 1e-2, 'the magnitudes visibly change the logits');
    });

    it('a 3-row batch (base, LoRA, DoRA) equals each row alone within 1e-5', async () => {
      const kinds = ['base', LORA_SLOT, DORA_SLOT] as const;
      const mixed = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0], slots: slotsOf([...kinds]), logits: 'all' });
      const n = PROMPTS[0]!.length * VOCAB;
      for (let r = 0; r < 3; r++) {
        const alone = await rt.forward({ firstRow: 3, tokens: [PROMPTS[r]!], pastLengths: [0], slots: slotsOf([kinds[r]!]), logits: 'all' });
        const d = maxAbsDiff(mixed.subarray(r * n, (r + 1) * n), alone);
        assert.ok(d <= 1e-5, `row ${r} (${kinds[r]}): max abs diff ${d}`);
      }
    });

    it(`greedy ${NEW_TOKENS}-token decode through the KV cache equals oracleGreedy (base, LoRA and DoRA rows)`, async () => {
      const slots = slotsOf(['base', LORA_SLOT, DORA_SLOT]);
      let logits = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0], slots, logits: 'last' });
      const generated: number[][] = [[], [], []];
      for (let step = 0; step < NEW_TOKENS; step++) {
        const next = [0, 1, 2].map((r) => argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB)));
        next.forEach((t, r) => generated[r]!.push(t));
        if (step === NEW_TOKENS - 1) break;
        const past = PROMPTS[0]!.length + step;
        logits = await rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: [past, past, past], slots, logits: 'last' });
      }
      assert.deepEqual(generated[0], oracleGreedy(config, weights, PROMPTS[0]!, NEW_TOKENS), 'base row');
      assert.deepEqual(generated[1], oracleGreedy(config, weights, PROMPTS[1]!, NEW_TOKENS, lora), 'LoRA row');
      assert.deepEqual(generated[2], oracleGreedy(config, weights, PROMPTS[2]!, NEW_TOKENS, undefined, [dora]), 'DoRA row');
    });

    it('base and LoRA rows beside a DoRA row (even one whose gains are NaN) are bit for bit as beside a plain LoRA', async () => {
      const poisoned: ParsedDelta = { ...doraDelta, tensors: new Map([...doraDelta.tensors].map(([name, t]) => [name, name.startsWith('dora_gain.') ? t.map(() => NaN) : t])) };
      const run = async (spare: ParsedDelta) => {
        writeSlot(rt, SPARE_SLOT, spare);
        const logits = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0, 0], slots: slotsOf(['base', LORA_SLOT, SPARE_SLOT]), logits: 'all' });
        const n = PROMPTS[0]!.length * VOCAB;
        return { others: bits(logits.subarray(0, 2 * n)), own: logits.subarray(2 * n) };
      };
      const plain = await run(loraDelta);
      const withDora = await run(doraDelta);
      const withNaN = await run(poisoned);
      assert.deepEqual(withDora.others, plain.others);
      assert.deepEqual(withNaN.others, plain.others);
      assert.ok(maxAbsDiff(withDora.own, plain.own) > 1e-2, 'the spare slot row itself does change');
      assert.ok(withNaN.own.every((v) => Number.isNaN(v)), 'the poisoned row is NaN (and only it)');
    });
  });
}
