/**
 * Every supported family (and checkpoint variant) through the real ONNX Runtime engine, checked
 * against the independent plain-TS oracle: prompt logits (base and LoRA), mixed-slot batches and
 * greedy decoding through the KV cache.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { loraSlots, maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';
import {
  loadOracleLora,
  loadWeightsF32,
  readConfig,
  writeTinyCheckpoint,
  writeTinyLora,
  type TinyCheckpointOptions,
  type TinyFamily,
} from '../oracle/checkpoints.js';
import { argmax, oracleForward, oracleGreedy, type OracleLora, type OracleWeights } from '../oracle/transformer.js';

interface Case {
  label: string;
  family: TinyFamily;
  checkpoint: TinyCheckpointOptions;
  useRslora?: boolean;
}

const CASES: Case[] = [
  { label: 'llama', family: 'llama', checkpoint: { seed: 11 } },
  { label: 'llama, transformers 4 config', family: 'llama', checkpoint: { seed: 12, transformersVersion: 4 } },
  { label: 'llama, llama3 rope', family: 'llama', checkpoint: { seed: 13, llama3Rope: true } },
  { label: 'llama, transformers 4 config + llama3 rope_scaling', family: 'llama', checkpoint: { seed: 14, transformersVersion: 4, llama3Rope: true } },
  { label: 'llama, sharded', family: 'llama', checkpoint: { seed: 15, sharded: true } },
  { label: 'llama, F16 weights', family: 'llama', checkpoint: { seed: 16, dtype: 'F16' } },
  { label: 'llama, BF16 weights', family: 'llama', checkpoint: { seed: 17, dtype: 'BF16' } },
  { label: 'qwen2', family: 'qwen2', checkpoint: { seed: 21 }, useRslora: true },
  { label: 'qwen2, transformers 4 config', family: 'qwen2', checkpoint: { seed: 22, transformersVersion: 4 } },
  { label: 'gpt2', family: 'gpt2', checkpoint: { seed: 31 } },
  { label: 'gpt2, bare tensor names', family: 'gpt2', checkpoint: { seed: 32, bareGpt2Names: true } },
  { label: 'gpt2, BF16 weights', family: 'gpt2', checkpoint: { seed: 33, dtype: 'BF16' } },
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
];
const NEW_TOKENS = 6;
const LORA_SLOT = 1;

// Every case on both attention kernels: 'matmul' (the CPU default) and 'group-query' (the GPU providers').
for (const c of CASES) for (const attention of ['matmul', 'group-query'] as const) {
  describe(`ModelRuntime vs oracle: ${c.label} (attention: ${attention})`, () => {
    let rt: ModelRuntime;
    let config: any;
    let weights: OracleWeights;
    let lora: OracleLora;
    let root: string;

    before(async () => {
      root = tempDir('deltaserve-families-');
      const modelDir = path.join(root, 'model');
      const loraDir = path.join(root, 'lora');
      writeTinyCheckpoint(modelDir, c.family, c.checkpoint);
      writeTinyLora(loraDir, c.family, { seed: 5, r: 8, alpha: 16, targetModules: TARGETS[c.family], useRslora: c.useRslora, baseDir: modelDir });
      config = readConfig(modelDir);
      weights = loadWeightsF32(modelDir); // F16/BF16 converted exactly, so the oracle sees the same weights
      lora = loadOracleLora(loraDir);
      rt = await ModelRuntime.create({ modelDir, cacheDir: path.join(root, 'cache'), device: 'cpu', maxRows: 4, maxContext: 32, deltaSlots: 2, maxRank: 16, threads: 1, attention });
      const delta = readDelta(rt, loraDir, 'tiny-lora');
      assert.equal(delta.summary['modules'], rt.stacks.get('lora')!.specs.filter((s) => s.name.startsWith('lora_A.')).length, 'the LoRA targets every projection');
      writeSlot(rt, LORA_SLOT, delta);
    });
    after(async () => {
      await rt?.release();
      fs.rmSync(root, { recursive: true, force: true });
    });

    const checkPrompt = (logits: Float32Array, expected: Float32Array[], what: string, tol = 1e-4) => {
      assert.equal(logits.length, expected.length * VOCAB);
      expected.forEach((row, pos) => {
        const diff = maxAbsDiff(logits.subarray(pos * VOCAB, (pos + 1) * VOCAB), row);
        assert.ok(diff <= tol, `${what} position ${pos}: max abs diff ${diff}`);
      });
    };

    it('base prompt logits match the oracle within 1e-4', async () => {
      const logits = await rt.forward({ firstRow: 0, tokens: [PROMPTS[0]!], pastLengths: [0], slots: loraSlots([-1]), logits: 'all' });
      checkPrompt(logits, oracleForward(config, weights, PROMPTS[0]!), 'base');
    });

    it('LoRA prompt logits match the oracle within 1e-4 (and differ from the base)', async () => {
      const logits = await rt.forward({ firstRow: 0, tokens: [PROMPTS[0]!], pastLengths: [0], slots: loraSlots([LORA_SLOT]), logits: 'all' });
      const expected = oracleForward(config, weights, PROMPTS[0]!, lora);
      checkPrompt(logits, expected, 'lora');
      const base = oracleForward(config, weights, PROMPTS[0]!);
      assert.ok(maxAbsDiff(expected[expected.length - 1]!, base[base.length - 1]!) > 1e-2, 'the LoRA visibly changes the logits');
    });

    it('a 2-row batch (base, LoRA) equals each row alone within 1e-5', async () => {
      const mixed = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0], slots: loraSlots([-1, LORA_SLOT]), logits: 'all' });
      const n = PROMPTS[0]!.length * VOCAB;
      const base = await rt.forward({ firstRow: 2, tokens: [PROMPTS[0]!], pastLengths: [0], slots: loraSlots([-1]), logits: 'all' });
      const withLora = await rt.forward({ firstRow: 3, tokens: [PROMPTS[1]!], pastLengths: [0], slots: loraSlots([LORA_SLOT]), logits: 'all' });
      const d0 = maxAbsDiff(mixed.subarray(0, n), base);
      const d1 = maxAbsDiff(mixed.subarray(n), withLora);
      assert.ok(d0 <= 1e-5, `row 0 (base): max abs diff ${d0}`);
      assert.ok(d1 <= 1e-5, `row 1 (LoRA): max abs diff ${d1}`);
    });

    it(`greedy ${NEW_TOKENS}-token decode through the KV cache equals oracleGreedy (base and LoRA rows)`, async () => {
      const slots = loraSlots([-1, LORA_SLOT]);
      let logits = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0], slots, logits: 'last' });
      const generated: number[][] = [[], []];
      for (let step = 0; step < NEW_TOKENS; step++) {
        const next = [0, 1].map((r) => argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB)));
        next.forEach((t, r) => generated[r]!.push(t));
        if (step === NEW_TOKENS - 1) break;
        const past = PROMPTS[0]!.length + step;
        logits = await rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: [past, past], slots, logits: 'last' });
      }
      assert.deepEqual(generated[0], oracleGreedy(config, weights, PROMPTS[0]!, NEW_TOKENS), 'base row');
      assert.deepEqual(generated[1], oracleGreedy(config, weights, PROMPTS[1]!, NEW_TOKENS, lora), 'LoRA row');
    });
  });
}
