/**
 * The fixture numerics on the WebGPU execution provider (`npm run test:webgpu`). Needs a WebGPU
 * adapter: a GPU with a Vulkan driver, or Mesa's lavapipe (.ci/run installs it), with
 * XDG_RUNTIME_DIR set. Kept out of `npm test` so the CPU suite runs on any machine.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DeviceKvCache } from '../../src/engine/device-kv-cache.js';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { FIXTURE, greedyRows, loadReference, logSoftmax, loraSlots, maxAbsDiff, readDelta, tempDir, writeSlot } from '../helpers.js';

const ref = loadReference();
const VOCAB = 512;

describe('webgpu: the PEFT fixture', () => {
  let rt: ModelRuntime;
  before(async () => {
    rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'webgpu', maxRows: 2, maxContext: 32, deltaSlots: 2, maxRank: 16 });
    writeSlot(rt, 1, readDelta(rt, path.join(FIXTURE, 'lora_all_r8')));
  });
  after(() => rt.release());

  for (const [label, slot, expected] of [['base', -1, ref.base], ['lora_all_r8', 1, ref.lora_all_r8]] as const) {
    it(`${label}: prompt logprobs within 1e-4 and greedy continuations equal PEFT's`, async () => {
      const logits = await rt.forward({ firstRow: 0, tokens: ref.input_ids, pastLengths: [0, 0], slots: loraSlots([slot, slot]), logits: 'all' });
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
    const last = async (slot: number) => rt.forward({ firstRow: 0, tokens: [ref.input_ids[0]!], pastLengths: [0], slots: loraSlots([slot]), logits: 'last' });
    const base = await last(-1);
    const withDelta = await last(1);
    writeSlot(rt, 0, readDelta(rt, path.join(FIXTURE, 'lora_all_r8')));
    writeSlot(rt, 1, { kind: 'lora', name: 'empty', tensors: new Map(), virtualTokens: 0, summary: {}, warnings: [] });
    assert.ok(maxAbsDiff(await last(0), withDelta) <= 1e-5, 'the delta in slot 0');
    assert.ok(maxAbsDiff(await last(1), base) <= 1e-5, 'slot 1 cleared');
    const mixed = await rt.forward({ firstRow: 0, tokens: [ref.input_ids[0]!, ref.input_ids[0]!], pastLengths: [0, 0], slots: loraSlots([0, -1]), logits: 'last' });
    assert.ok(maxAbsDiff(mixed.subarray(0, VOCAB), withDelta) <= 1e-5 && maxAbsDiff(mixed.subarray(VOCAB), base) <= 1e-5, 'a mixed batch');
  });

  it('the KV cache lives on the device: its tensors are gpu-buffers, and moving a row (compaction) is a table change that decoding follows', async () => {
    assert.ok(rt.cache instanceof DeviceKvCache);
    const cache = rt.cache as DeviceKvCache;
    const [a, b] = ref.input_ids as [number[], number[]];
    // Reference: b alone in row 1, then one decode step.
    await rt.forward({ firstRow: 0, tokens: [a, b], pastLengths: [0, 0], slots: loraSlots([-1, 1]), logits: 'last' });
    assert.equal(cache.layer(0).key.location, 'gpu-buffer');
    const stay = await rt.forward({ firstRow: 1, tokens: [[7]], pastLengths: [8], slots: loraSlots([1]), logits: 'last' });
    // Again, but row 0's sequence ends and row 1's moves down into it before the decode step.
    await rt.forward({ firstRow: 0, tokens: [a, b], pastLengths: [0, 0], slots: loraSlots([-1, 1]), logits: 'last' });
    rt.cache.moveRow(1, 0, 8);
    assert.deepEqual(cache.rows(0, 2), [1, 0]);
    const moved = await rt.forward({ firstRow: 0, tokens: [[7]], pastLengths: [8], slots: loraSlots([1]), logits: 'last' });
    assert.ok(maxAbsDiff(moved, stay) <= 1e-5, `${maxAbsDiff(moved, stay)}`);
  });

  it('a right-padded first prefill of different lengths, then decoding, equals each row alone', async () => {
    const short = ref.input_ids[0]!.slice(0, 5);
    const long = ref.input_ids[1]!;
    const together = await rt.forward({ firstRow: 0, tokens: [short, long], pastLengths: [0, 0], slots: loraSlots([1, -1]), logits: 'last' });
    const next = await rt.forward({ firstRow: 0, tokens: [[7], [9]], pastLengths: [5, 8], slots: loraSlots([1, -1]), logits: 'last' });
    const aloneShort = await rt.forward({ firstRow: 0, tokens: [short], pastLengths: [0], slots: loraSlots([1]), logits: 'last' });
    const nextShort = await rt.forward({ firstRow: 0, tokens: [[7]], pastLengths: [5], slots: loraSlots([1]), logits: 'last' });
    const aloneLong = await rt.forward({ firstRow: 1, tokens: [long], pastLengths: [0], slots: loraSlots([-1]), logits: 'last' });
    const nextLong = await rt.forward({ firstRow: 1, tokens: [[9]], pastLengths: [8], slots: loraSlots([-1]), logits: 'last' });
    assert.ok(maxAbsDiff(together.subarray(0, VOCAB), aloneShort) <= 1e-5 && maxAbsDiff(together.subarray(VOCAB), aloneLong) <= 1e-5, 'prefill');
    assert.ok(maxAbsDiff(next.subarray(0, VOCAB), nextShort) <= 1e-5 && maxAbsDiff(next.subarray(VOCAB), nextLong) <= 1e-5, 'decode after it');
  });
});

it('webgpu: the inference graph with the device KV cache runs on the device, except shape arithmetic', () => {
  const probe = fileURLToPath(new URL('./placement-probe.ts', import.meta.url));
  const run = spawnSync(process.execPath, ['--import', 'tsx', probe, 'inference'], { encoding: 'utf8', env: process.env });
  assert.equal(run.status, 0, run.stderr.slice(-2000));
  const report = run.stdout + run.stderr;
  const placed = (provider: string) => {
    const block = new RegExp(`Node\\(s\\) placed on \\[${provider}\\]\\. Number of nodes: \\d+\\n((?:.*VerifyEachNodeIsAssignedToAnEp\\]\\s{3}.*\\n)*)`).exec(report)?.[1] ?? '';
    return [...block.matchAll(/\]\s{3}(\w+) \(/g)].map((m) => m[1]!);
  };
  const onGpu = placed('WebGpuExecutionProvider');
  for (const op of ['ScatterND', 'GroupQueryAttention', 'Gemm', 'MatMul']) assert.ok(onGpu.includes(op), `${op} on the device`);
  const onCpu = placed('CPUExecutionProvider');
  assert.ok(onCpu.every((op) => ['Shape', 'Concat'].includes(op)), `only shape arithmetic on the CPU, got ${onCpu.join(', ')}`);
});
