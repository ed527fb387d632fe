/**
 * Tenant isolation in the engine: whatever one row computes — NaN, Inf, overflowing activations
 * from a delta injected past validation — cannot reach another row of the same pass, nor a
 * later request that reuses the row's KV cache or the delta's slot.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ParsedDelta } from '../../src/deltas/kind.js';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { greedyRequest, type GenerateEvent, type GenerateRequest } from '../../src/engine/types.js';
import { argmax } from '../../src/engine/sampler.js';
import { FIXTURE, loraSlots, readDelta, tempDir, writeSlot } from '../helpers.js';

type Poison = 'nan' | 'inf' | 'huge' | 'nan-scale';

/** The fixture LoRA (in slot layout: A [in, R], B = scale · [R, out]) with values validation would refuse. */
function poisoned(delta: ParsedDelta, poison: Poison): ParsedDelta {
  const tensors = new Map<string, Float32Array>();
  for (const [name, t] of delta.tensors) {
    const copy = Float32Array.from(t);
    const isB = name.startsWith('lora_B.');
    if (poison === 'nan' && isB) copy.fill(NaN, 0, 7);
    if (poison === 'inf' && !isB) copy.fill(Infinity, 3, 5);
    if (poison === 'huge') copy.fill(1e30);
    if (poison === 'nan-scale' && isB) copy.forEach((v, i) => (copy[i] = v * NaN));
    tensors.set(name, copy);
  }
  return { ...delta, tensors };
}

/** The same fixture LoRA at half the scale: a well-behaved delta of identical shapes. */
function benign(delta: ParsedDelta): ParsedDelta {
  return { ...delta, tensors: new Map([...delta.tensors].map(([name, t]) => [name, name.startsWith('lora_B.') ? t.map((v) => v * 0.5) : t])) };
}

/** Bit patterns of a Float32Array, so NaN and -0 compare exactly too. */
const bits = (x: Float32Array) => [...new Uint32Array(x.buffer, x.byteOffset, x.length)];

for (const attention of ['matmul', 'group-query'] as const) {
  describe(`a poisoned delta beside normal rows (attention: ${attention})`, () => {
    let rt: ModelRuntime;
    let lora: ParsedDelta;
    const VOCAB = 512;
    before(async () => {
      rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'cpu', maxRows: 4, maxContext: 64, deltaSlots: 3, maxRank: 8, threads: 1, attention });
      lora = readDelta(rt, path.join(FIXTURE, 'lora_all_r8'), 'lora');
    });
    after(() => rt.release());

    /**
     * A right-padded first prefill of four rows (row 2 uses slot 2), then five decode steps of all
     * four; returns the logits of rows 0, 1 and 3 at every pass. Rows 0, 1, 3 decode greedily;
     * row 2 is fed fixed tokens, so both runs make exactly the same passes.
     */
    async function passes(slot2: ParsedDelta): Promise<number[][][]> {
      writeSlot(rt, 1, lora);
      writeSlot(rt, 2, slot2);
      for (let row = 0; row < 4; row++) rt.cache.clearRow(row);
      const prompts = [[5, 9, 300, 17, 2], [40, 41, 42], [7, 7, 7, 7, 7, 7], [100, 3]];
      const slots = loraSlots([-1, 1, 2, 1]);
      const out: number[][][] = [];
      let logits = await rt.forward({ firstRow: 0, tokens: prompts, pastLengths: [0, 0, 0, 0], slots, logits: 'last' });
      let lengths = prompts.map((p) => p.length);
      for (let step = 0; ; step++) {
        out.push([0, 1, 3].map((r) => bits(logits.subarray(r * VOCAB, (r + 1) * VOCAB))));
        if (step === 5) return out;
        const next = [0, 1, 2, 3].map((r) => (r === 2 ? 11 + step : argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB))));
        // Decode rows must share a length per pass: step each row alone, as the scheduler's rows do when lengths differ.
        const stepped: Float32Array[] = [];
        for (let r = 0; r < 4; r++) stepped.push(await rt.forward({ firstRow: r, tokens: [[next[r]!]], pastLengths: [lengths[r]!], slots: [slots[r]!], logits: 'last' }));
        lengths = lengths.map((n) => n + 1);
        logits = new Float32Array(4 * VOCAB);
        stepped.forEach((l, r) => logits.set(l, r * VOCAB));
      }
    }

    /** Four rows of equal length decoded in one pass per step, so the poisoned row shares every decode pass. */
    async function sharedDecode(slot2: ParsedDelta): Promise<number[][][]> {
      writeSlot(rt, 1, lora);
      writeSlot(rt, 2, slot2);
      for (let row = 0; row < 4; row++) rt.cache.clearRow(row);
      const prompts = [[5, 9, 300, 17], [40, 41, 42, 43], [7, 7, 7, 7], [100, 3, 8, 8]];
      const slots = loraSlots([1, -1, 2, 1]);
      const out: number[][][] = [];
      let logits = await rt.forward({ firstRow: 0, tokens: prompts, pastLengths: [0, 0, 0, 0], slots, logits: 'last' });
      for (let step = 0; step < 6; step++) {
        out.push([0, 1, 3].map((r) => bits(logits.subarray(r * VOCAB, (r + 1) * VOCAB))));
        const next = [0, 1, 2, 3].map((r) => (r === 2 ? 11 + step : argmax(logits.subarray(r * VOCAB, (r + 1) * VOCAB))));
        logits = await rt.forward({ firstRow: 0, tokens: next.map((t) => [t]), pastLengths: prompts.map((p) => p.length + step), slots, logits: 'last' });
      }
      return out;
    }

    // References from a runtime no poison has touched yet; every case below must reproduce them.
    let clean: { shared: number[][][]; padded: number[][][] };
    before(async () => {
      clean = { shared: await sharedDecode(benign(lora)), padded: await passes(benign(lora)) };
    });

    for (const poison of ['nan', 'inf', 'huge', 'nan-scale'] as const) {
      it(`${poison}: the other rows are bit-identical to a run without it, in a padded prefill and in shared decode passes`, async () => {
        assert.deepEqual(await sharedDecode(poisoned(lora, poison)), clean.shared);
        assert.deepEqual(await passes(poisoned(lora, poison)), clean.padded);
        // And a clean run right after the poisoned one is still clean.
        assert.deepEqual(await sharedDecode(benign(lora)), clean.shared);
        // The poisoned row itself did go bad (the test would prove nothing otherwise).
        writeSlot(rt, 2, poisoned(lora, poison));
        const own = await rt.forward({ firstRow: 0, tokens: [[7, 7, 7]], pastLengths: [0], slots: loraSlots([2]), logits: 'last' });
        assert.ok(own.some((v) => !Number.isFinite(v)), 'the poisoned row produces non-finite logits');
      });
    }
  });
}

describe('through the scheduler: the poisoned request fails alone, and the row and slot it used are clean for the next one', () => {
  let rt: ModelRuntime;
  let lora: ParsedDelta;
  before(async () => {
    rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'cpu', maxRows: 3, maxContext: 64, deltaSlots: 2, maxRank: 8, threads: 1 });
    lora = readDelta(rt, path.join(FIXTURE, 'lora_all_r8'), 'lora');
  });
  after(() => rt.release());

  /** Runs the requests (submitted in waves) to completion; returns every event per request. */
  async function run(deltas: Map<string, ParsedDelta>, waves: GenerateRequest[][]) {
    const events = new Map<string, GenerateEvent[]>();
    const scheduler = new Scheduler(rt, { lookup: (n) => deltas.get(n) }, (e) => events.set(e.id, [...(events.get(e.id) ?? []), e]), { prefillChunk: 64, maxQueue: 100 });
    for (const wave of waves) {
      for (const r of wave) scheduler.submit(r);
      for (let i = 0; !scheduler.idle && i < 1000; i++) await scheduler.step();
    }
    return events;
  }

  const withLogprobs = (r: GenerateRequest): GenerateRequest => ({ ...r, promptLogprobs: true, tokenLogprobs: true, topLogprobs: 3 });
  // 'p' holds row 0 and the first slot; its prompt is longer than 'a', which slides into row 0
  // when 'p' leaves, so without clearing, 'a' would sit on positions 'p' wrote. Both runs
  // release 'p' at the same step (it has one token to give), so their passes are identical.
  const first = [
    greedyRequest('p', [7, 7, 7, 7, 7, 7, 7, 7, 7, 7], ['suspect'], 1),
    withLogprobs(greedyRequest('a', [5, 9, 300], ['lora'], 6)),
    withLogprobs(greedyRequest('b', [40, 41, 42, 43], [], 6)),
  ];
  // The next wave: 'c' takes row 0 again and, with a new delta, the least recently used slot: 'p''s.
  const second = [withLogprobs(greedyRequest('c', [1, 2, 3], ['fresh'], 5))];
  // References from the runtime before any poison: the run with a benign 'suspect', and 'c' alone.
  let good: Map<string, GenerateEvent[]>;
  let alone: Map<string, GenerateEvent[]>;
  before(async () => {
    alone = await run(new Map([['fresh', benign(lora)]]), [second]);
    good = await run(new Map([['lora', lora], ['suspect', benign(lora)], ['fresh', benign(lora)]]), [first, second]);
    for (const id of ['a', 'b', 'c']) assert.equal(good.get(id)!.at(-1)!.type, 'done', id);
  });

  for (const poison of ['nan', 'huge'] as const) {
    it(`${poison}: normal requests beside it and after it on its row and slot equal a run without it`, async () => {
      const bad = await run(new Map([['lora', lora], ['suspect', poisoned(lora, poison)], ['fresh', benign(lora)]]), [first, second]);
      const failure = bad.get('p')!.at(-1)!;
      assert.equal(failure.type, 'error');
      assert.equal((failure as { code: string }).code, 'invalid_delta');
      assert.match((failure as { message: string }).message, /delta 'suspect' produced non-finite logits/);
      for (const id of ['a', 'b']) assert.deepEqual(bad.get(id), good.get(id), id);
      assert.deepEqual(bad.get('c'), alone.get('c'), 'the next request on the poisoned row and slot');
    });
  }

  it('a pass that throws ends the sequences running in it with an error, and the engine keeps serving', async () => {
    const deltas = new Map([['lora', lora]]);
    const events = new Map<string, GenerateEvent[]>();
    const scheduler = new Scheduler(rt, { lookup: (n) => deltas.get(n) }, (e) => events.set(e.id, [...(events.get(e.id) ?? []), e]), { prefillChunk: 64, maxQueue: 100 });
    const forward = rt.forward.bind(rt);
    let calls = 0;
    // A fault in the third pass (the second decode step), from the real runtime's own forward.
    rt.forward = async (pass) => (++calls === 3 ? Promise.reject(new Error('injected ORT failure')) : forward(pass));
    try {
      for (const r of [greedyRequest('x', [5, 9, 300], ['lora'], 6), greedyRequest('y', [40, 41, 42], [], 6)]) scheduler.submit(r);
      for (let i = 0; !scheduler.idle && i < 100; i++) await scheduler.step();
      for (const id of ['x', 'y']) {
        const last = events.get(id)!.at(-1)! as { type: string; code?: string; message?: string };
        assert.equal(last.type, 'error', id);
        assert.equal(last.code, 'internal_error');
        assert.match(last.message!, /injected ORT failure/);
      }
      // Later requests are served, and what they get is what a fresh run gives.
      scheduler.submit(greedyRequest('z', [1, 2, 3], ['lora'], 5));
      for (let i = 0; !scheduler.idle && i < 100; i++) await scheduler.step();
      const tokens = events.get('z')!.filter((e) => e.type === 'token').map((e) => (e as { token: number }).token);
      assert.equal(events.get('z')!.at(-1)!.type, 'done');
      const reference = await run(deltas, [[greedyRequest('z', [1, 2, 3], ['lora'], 5)]]);
      assert.deepEqual(tokens, reference.get('z')!.filter((e) => e.type === 'token').map((e) => (e as { token: number }).token));
    } finally {
      rt.forward = forward;
    }
  });
});
