/**
 * BitFit and LN tuning on the WebGPU execution provider (device KV cache, device-resident slot
 * stacks), against their oracles on the PEFT fixture's Llama. Needs a WebGPU adapter (a GPU, or
 * Mesa's lavapipe with XDG_RUNTIME_DIR set), like numerics.webgpu.ts:
 *   node --import tsx --test test/webgpu/specification.webgpu.ts
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelRuntime, type RowSlots } from '../../src/engine/model-runtime.js';
import { FIXTURE, maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';
import { loadOracleLora, loadWeightsF32, readConfig } from '../oracle/checkpoints.js';
import { bitfitOracle, writeTinyBitfit } from '../oracle/kinds/bitfit.js';
import { lnTuningOracle, writeTinyLnTuning } from '../oracle/kinds/ln-tuning.js';
import { argmax, oracleForward, oracleGreedy, type OracleDelta, type OracleLora } from '../oracle/transformer.js';

const BASE = path.join(FIXTURE, 'base');
const VOCAB = 512;
const PROMPTS = [[0, 17, 42, 7, 250, 99, 3, 128], [0, 200, 11, 11, 290, 33, 71, 8]];

describe('webgpu: BitFit and LN tuning rows beside base and LoRA rows', () => {
  let rt: ModelRuntime;
  const config = readConfig(BASE);
  const weights = loadWeightsF32(BASE);
  let bf: OracleDelta, ln: OracleDelta, lora: OracleLora;

  before(async () => {
    const root = tempDir('deltaserve-spec-webgpu-');
    writeTinyBitfit(path.join(root, 'bf'), 'llama', { baseDir: BASE, seed: 31 });
    writeTinyLnTuning(path.join(root, 'ln'), 'llama', { baseDir: BASE, seed: 32 });
    bf = bitfitOracle(path.join(root, 'bf'), weights);
    ln = lnTuningOracle(path.join(root, 'ln'), config, weights);
    lora = loadOracleLora(path.join(FIXTURE, 'lora_all_r8'));
    rt = await ModelRuntime.create({ modelDir: BASE, cacheDir: root, device: 'webgpu', maxRows: 2, maxContext: 32, deltaSlots: 2, maxRank: 8 });
    writeSlot(rt, 1, readDelta(rt, path.join(root, 'bf')));
    writeSlot(rt, 1, readDelta(rt, path.join(root, 'ln')));
    writeSlot(rt, 0, readDelta(rt, path.join(FIXTURE, 'lora_all_r8')));
  });
  after(() => rt?.release());

  it('prompt logits of [bitfit, ln_tuning+LoRA] rows in one pass match the oracle within 1e-4', async () => {
    const logits = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0], slots: [{ bitfit: 1 }, { ln_tuning: 1, lora: 0 }], logits: 'all' });
    const expected = [oracleForward(config, weights, PROMPTS[0]!, undefined, [bf]), oracleForward(config, weights, PROMPTS[1]!, lora, [ln])];
    expected.forEach((rows, r) => rows.forEach((row, pos) => {
      const at = (r * PROMPTS[0]!.length + pos) * VOCAB;
      const diff = maxAbsDiff(logits.subarray(at, at + VOCAB), row);
      assert.ok(diff <= 1e-4, `row ${r} position ${pos}: ${diff}`);
    }));
  });

  it('greedy decoding through the device KV cache equals the oracle (base+bitfit+ln_tuning, base rows)', async () => {
    const slots: RowSlots[] = [{ bitfit: 1, ln_tuning: 1 }, {}];
    let logits = await rt.forward({ firstRow: 0, tokens: PROMPTS, pastLengths: [0, 0], slots, logits: 'last' });
    const generated: number[][] = [[], []];
    for (let step = 0; step < 6; step++) {
      const next = [0, 1].map((r) => argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB)));
      next.forEach((t, r) => generated[r]!.push(t));
      logits = await rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: [8 + step, 8 + step], slots, logits: 'last' });
    }
    assert.deepEqual(generated[0], oracleGreedy(config, weights, PROMPTS[0]!, 6, undefined, [bf, ln]));
    assert.deepEqual(generated[1], oracleGreedy(config, weights, PROMPTS[1]!, 6));
  });
});
