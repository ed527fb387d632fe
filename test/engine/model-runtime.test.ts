import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { FIXTURE, greedyRows, loadReference, logSoftmax, loraSlots, maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';

const ref = loadReference();
const VOCAB = 512;

// Both attention kernels run here: 'matmul' is the CPU default, 'group-query' the GPU providers' one.
for (const attention of ['matmul', 'group-query'] as const) describe(`ModelRuntime on the PEFT fixture (attention: ${attention})`, () => {
  let rt: ModelRuntime;
  before(async () => {
    rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'cpu', maxRows: 4, maxContext: 64, deltaSlots: 3, maxRank: 16, attention });
    writeSlot(rt, 1, readDelta(rt, path.join(FIXTURE, 'lora_all_r8')));
  });
  after(() => rt.release());

  const rowLogprobs = (logits: Float32Array, row: number, pos: number) => logSoftmax(logits.subarray((row * 8 + pos) * VOCAB, (row * 8 + pos + 1) * VOCAB));

  for (const [label, slot, expected] of [['base', -1, ref.base], ['lora_all_r8', 1, ref.lora_all_r8]] as const) {
    it(`${label}: prompt logprobs match PEFT within 1e-4`, async () => {
      const logits = await rt.forward({ firstRow: 0, tokens: ref.input_ids, pastLengths: [0, 0], slots: loraSlots([slot, slot]), logits: 'all' });
      for (let row = 0; row < 2; row++) {
        for (let pos = 0; pos < 8; pos++) {
          const diff = maxAbsDiff(rowLogprobs(logits, row, pos), logSoftmax(expected.logits[row]![pos]!));
          assert.ok(diff <= 1e-4, `row ${row} pos ${pos}: max abs diff ${diff}`);
        }
      }
    });
  }

  it('a batch mixing the base and a delta gives each row its own logits', async () => {
    const mixed = await rt.forward({ firstRow: 0, tokens: ref.input_ids, pastLengths: [0, 0], slots: loraSlots([-1, 1]), logits: 'all' });
    const base = await rt.forward({ firstRow: 2, tokens: [ref.input_ids[0]!], pastLengths: [0], slots: loraSlots([-1]), logits: 'all' });
    const lora = await rt.forward({ firstRow: 3, tokens: [ref.input_ids[1]!], pastLengths: [0], slots: loraSlots([1]), logits: 'all' });
    assert.ok(maxAbsDiff(mixed.subarray(0, 8 * VOCAB), base) <= 1e-5);
    assert.ok(maxAbsDiff(mixed.subarray(8 * VOCAB), lora) <= 1e-5);
  });

  it('a first prefill of rows with different lengths (right-padded) equals each row alone, and decoding continues', async () => {
    const short = ref.input_ids[0]!.slice(0, 5);
    const long = ref.input_ids[1]!;
    const together = await rt.forward({ firstRow: 0, tokens: [short, long], pastLengths: [0, 0], slots: loraSlots([1, -1]), logits: 'last' });
    const aloneShort = await rt.forward({ firstRow: 2, tokens: [short], pastLengths: [0], slots: loraSlots([1]), logits: 'last' });
    const aloneLong = await rt.forward({ firstRow: 3, tokens: [long], pastLengths: [0], slots: loraSlots([-1]), logits: 'last' });
    assert.ok(maxAbsDiff(together.subarray(0, VOCAB), aloneShort) <= 1e-5);
    assert.ok(maxAbsDiff(together.subarray(VOCAB), aloneLong) <= 1e-5);
    const next = await rt.forward({ firstRow: 0, tokens: [[7], [9]], pastLengths: [5, 8], slots: loraSlots([1, -1]), logits: 'last' });
    const nextShort = await rt.forward({ firstRow: 2, tokens: [[7]], pastLengths: [5], slots: loraSlots([1]), logits: 'last' });
    const nextLong = await rt.forward({ firstRow: 3, tokens: [[9]], pastLengths: [8], slots: loraSlots([-1]), logits: 'last' });
    assert.ok(maxAbsDiff(next.subarray(0, VOCAB), nextShort) <= 1e-5);
    assert.ok(maxAbsDiff(next.subarray(VOCAB), nextLong) <= 1e-5);
  });

  it('incremental decode with the KV cache equals full recomputation', async () => {
    const ids = ref.input_ids[1]!;
    const full = await rt.forward({ firstRow: 0, tokens: [ids], pastLengths: [0], slots: loraSlots([1]), logits: 'all' });
    await rt.forward({ firstRow: 1, tokens: [ids.slice(0, 3)], pastLengths: [0], slots: loraSlots([1]), logits: 'last' });
    await rt.forward({ firstRow: 1, tokens: [ids.slice(3, 6)], pastLengths: [3], slots: loraSlots([1]), logits: 'last' });
    for (let pos = 6; pos < 8; pos++) {
      const step = await rt.forward({ firstRow: 1, tokens: [[ids[pos]!]], pastLengths: [pos], slots: loraSlots([1]), logits: 'last' });
      assert.ok(maxAbsDiff(step, full.subarray(pos * VOCAB, (pos + 1) * VOCAB)) <= 1e-5, `position ${pos}`);
    }
  });

  it('decode across KV-cache growth (capacity growing mid-sequence) still equals full recomputation', async () => {
    const long = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'cpu', maxRows: 2, maxContext: 256, deltaSlots: 2, maxRank: 16, attention });
    try {
      const ids = Array.from({ length: 150 }, (_, i) => (i * 37 + 11) % VOCAB);
      const full = await long.forward({ firstRow: 0, tokens: [ids], pastLengths: [0], slots: loraSlots([-1]), logits: 'all' });
      assert.equal(long.cache.capacity, 160);
      long.cache.fit(0);
      assert.equal(long.cache.capacity, 64);
      await long.forward({ firstRow: 1, tokens: [ids.slice(0, 60)], pastLengths: [0], slots: loraSlots([-1]), logits: 'last' });
      for (let pos = 60; pos < 150; pos++) {
        const step = await long.forward({ firstRow: 1, tokens: [[ids[pos]!]], pastLengths: [pos], slots: loraSlots([-1]), logits: 'last' });
        if (pos % 10 === 4) assert.ok(maxAbsDiff(step, full.subarray(pos * VOCAB, (pos + 1) * VOCAB)) <= 1e-5, `position ${pos} (capacity ${long.cache.capacity})`);
      }
      assert.ok(long.cache.capacity >= 150 && long.cache.capacity < 256, `capacity ${long.cache.capacity}`);
    } finally {
      await long.release();
    }
  });

  for (const [label, slot, expected] of [['base', -1, ref.base], ['lora_all_r8', 1, ref.lora_all_r8]] as const) {
    it(`${label}: greedy 12-token continuations equal PEFT's`, async () => {
      assert.deepEqual(await greedyRows(rt, ref.input_ids, [slot, slot], 12), expected.greedy_12);
    });
  }
});
