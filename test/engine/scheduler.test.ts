import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ParsedDelta } from '../../src/deltas/kind.js';
import { ModelRuntime } from '../../src/engine/model-runtime.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { greedyRequest, type GenerateEvent, type GenerateRequest } from '../../src/engine/types.js';
import { FIXTURE, readDelta, tempDir } from '../helpers.js';

/** Runs requests through a scheduler until idle; returns each request's generated tokens and finish reason. */
async function run(rt: ModelRuntime, deltas: Map<string, ParsedDelta>, requests: GenerateRequest[], options: { prefillChunk: number; cancelAfter?: Record<string, number> }) {
  const out = new Map<string, { tokens: number[]; finish?: string }>(requests.map((r) => [r.id, { tokens: [] }]));
  let scheduler: Scheduler;
  const emit = (e: GenerateEvent) => {
    const entry = out.get(e.id)!;
    if (e.type === 'token') {
      entry.tokens.push(e.token);
      if (options.cancelAfter?.[e.id] === entry.tokens.length) scheduler.cancel(e.id);
    }
    if (e.type === 'done') entry.finish = e.finishReason;
  };
  scheduler = new Scheduler(rt, { lookup: (n) => deltas.get(n) }, emit, { prefillChunk: options.prefillChunk, maxQueue: 100 });
  for (const r of requests) scheduler.submit(r);
  for (let i = 0; !scheduler.idle && i < 10_000; i++) await scheduler.step();
  return out;
}


describe('Scheduler: rows join and leave mid-flight without disturbing each other', () => {
  let rt: ModelRuntime;
  const deltas = new Map<string, ParsedDelta>();
  before(async () => {
    rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'cpu', maxRows: 3, maxContext: 64, deltaSlots: 2, maxRank: 8, threads: 1 });
    deltas.set('lora', readDelta(rt, path.join(FIXTURE, 'lora_all_r8'), 'lora'));
  });
  after(() => rt.release());

  it('7 requests of mixed lengths through 3 rows and 5-token prefill chunks equal each request alone', async () => {
    const requests = Array.from({ length: 7 }, (_, i) =>
      greedyRequest(`r${i}`, Array.from({ length: 3 + ((i * 5) % 11) }, (_, j) => (i * 37 + j * 11) % 512), i % 3 === 0 ? [] : ['lora'], 2 + ((i * 3) % 7)),
    );
    const together = await run(rt, deltas, requests, { prefillChunk: 5 });
    for (const r of requests) {
      const alone = await run(rt, deltas, [r], { prefillChunk: 64 });
      assert.deepEqual(together.get(r.id), alone.get(r.id), r.id);
      assert.equal(together.get(r.id)!.tokens.length, r.maxTokens);
    }
  });

  it('short prompts prefilled together in one padded pass decode as they would alone', async () => {
    const requests = Array.from({ length: 6 }, (_, i) => greedyRequest(`s${i}`, Array.from({ length: 2 + (i % 4) }, (_, j) => (i * 53 + j * 29) % 512), i % 2 ? ['lora'] : [], 3 + (i % 3)));
    const together = await run(rt, deltas, requests, { prefillChunk: 16 });
    for (const r of requests) {
      const alone = await run(rt, deltas, [r], { prefillChunk: 1 });
      assert.deepEqual(together.get(r.id), alone.get(r.id), r.id);
    }
  });

  it('cancelled sequences free their rows; the survivors are unaffected', async () => {
    const requests = Array.from({ length: 5 }, (_, i) => greedyRequest(`c${i}`, [5 + i, 17, 42, 100 + i], i % 2 ? ['lora'] : [], 8));
    const together = await run(rt, deltas, requests, { prefillChunk: 3, cancelAfter: { c0: 2, c3: 4 } });
    assert.equal(together.get('c0')!.finish, 'cancelled');
    assert.equal(together.get('c3')!.finish, 'cancelled');
    for (const id of ['c1', 'c2', 'c4']) {
      const alone = await run(rt, deltas, [requests.find((r) => r.id === id)!], { prefillChunk: 64 });
      assert.deepEqual(together.get(id), alone.get(id), id);
    }
  });
});

describe('Scheduler: --request-timeout-ms', () => {
  let rt: ModelRuntime;
  before(async () => {
    rt = await ModelRuntime.create({ modelDir: path.join(FIXTURE, 'base'), cacheDir: tempDir(), device: 'cpu', maxRows: 2, maxContext: 64, deltaSlots: 1, maxRank: 8, threads: 1 });
  });
  after(() => rt.release());

  it("a generation whose deadline passes mid-way ends with finish reason 'timeout', not 'length'", async () => {
    const events: GenerateEvent[] = [];
    const scheduler = new Scheduler(rt, { lookup: () => undefined }, (e) => events.push(e), { prefillChunk: 64, maxQueue: 4 });
    const request = greedyRequest('t', [5, 6, 7], [], 40);
    request.deadline = Date.now() + 60_000;
    scheduler.submit(request);
    for (let i = 0; i < 4; i++) await scheduler.step();
    const tokens = events.filter((e) => e.type === 'token').length;
    assert.ok(tokens >= 4 && tokens < 40);
    request.deadline = Date.now() - 1; // the engine holds the same request object
    await scheduler.step();
    const done = events.find((e) => e.type === 'done');
    assert.deepEqual(done && { reason: done.finishReason, tokens: done.completionTokens }, { reason: 'timeout', tokens });
    assert.ok(scheduler.idle);
  });
});
