/**
 * The fixture numerics on the WebGPU execution provider (`npm run test:webgpu`). Needs a WebGPU
 * adapter: a GPU with a Vulkan driver, or Mesa's lavapipe (.ci/run installs it), with
 * XDG_RUNTIME_DIR set. Kept out of `npm test` so the CPU suite runs on any machine.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readPeftDirectory } from '../../src/deltas/peft-lora.js';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { FIXTURE, greedyRows, loadReference, logSoftmax, maxAbsDiff, tempDir } from '../helpers.js';

const ref = loadReference();
const VOCAB = 512;

describe('webgpu: the PEFT fixture', () => {
  let rt: ModelRuntime;
  before(async () => {
    rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'webgpu', maxRows: 2, maxContext: 32, deltaSlots: 2, maxRank: 16 });
    rt.slots.write(1, readPeftDirectory(path.join(FIXTURE, 'lora_all_r8'), 'lora_all_r8', rt.arch, 16).modules);
  });
  after(() => rt.release());

  for (const [label, slot, expected] of [['base', -1, ref.base], ['lora_all_r8', 1, ref.lora_all_r8]] as const) {
    it(`${label}: prompt logprobs within 1e-4 and greedy continuations equal PEFT's`, async () => {
      const logits = await rt.forward({ firstRow: 0, tokens: ref.input_ids, pastLengths: [0, 0], slots: [slot, slot], logits: 'all' });
      for (let row = 0; row < 2; row++) {
        for (let pos = 0; pos < 8; pos++) {
          const at = (row * 8 + pos) * VOCAB;
          const diff = maxAbsDiff(logSoftmax(logits.subarray(at, at + VOCAB)), logSoftmax(expected.logits[row]![pos]!));
          assert.ok(diff <= 1e-4, `row ${row} pos ${pos}: ${diff}`);
        }
      }
      assert.deepEqual(await greedyRows(rt, ref.input_ids, [slot, slot], 12), expected.greedy_12);
    });
  }

  it('slot stacks live on the device and follow slot writes: a delta moved to another slot gives the same logits, a cleared slot the base', async () => {
    const last = async (slot: number) => rt.forward({ firstRow: 0, tokens: [ref.input_ids[0]!], pastLengths: [0], slots: [slot], logits: 'last' });
    const base = await last(-1);
    const withDelta = await last(1);
    rt.slots.write(0, readPeftDirectory(path.join(FIXTURE, 'lora_all_r8'), 'lora_all_r8', rt.arch, 16).modules);
    rt.slots.clear(1);
    assert.ok(maxAbsDiff(await last(0), withDelta) <= 1e-5, 'the delta in slot 0');
    assert.ok(maxAbsDiff(await last(1), base) <= 1e-5, 'slot 1 cleared');
    const mixed = await rt.forward({ firstRow: 0, tokens: [ref.input_ids[0]!, ref.input_ids[0]!], pastLengths: [0, 0], slots: [0, -1], logits: 'last' });
    assert.ok(maxAbsDiff(mixed.subarray(0, VOCAB), withDelta) <= 1e-5 && maxAbsDiff(mixed.subarray(VOCAB), base) <= 1e-5, 'a mixed batch');
  });
});
