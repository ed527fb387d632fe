import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Engine } from '../engine/client.js';
import { greedyRequest, type GenerateEvent } from '../engine/types.js';
import { ApiError } from './errors.js';
import { collectChoice, startChoice, type ChoicePlan } from './generation.js';

/** An engine that plays back a fixed event list for every request. */
function scripted(events: GenerateEvent[]): Engine {
  return {
    async *generate() {
      for (const e of events) yield e;
    },
  } as unknown as Engine;
}

const plan = (): ChoicePlan => ({ index: 0, request: greedyRequest('r', [1, 2], [], 10), stop: [], echo: false, logprobs: null });

describe('finish reasons as clients see them', () => {
  it("a generation cut by the request timeout reports 'timeout'", async () => {
    const engine = scripted([
      { type: 'queued', id: 'r' },
      { type: 'token', id: 'r', token: 5, logprob: NaN },
      { type: 'token', id: 'r', token: 6, logprob: NaN },
      { type: 'done', id: 'r', finishReason: 'timeout', promptTokens: 2, completionTokens: 2 },
    ]);
    const result = await collectChoice(await startChoice(engine, undefined, plan()), plan());
    assert.equal(result.finishReason, 'timeout');
    assert.deepEqual(result.tokenIds, [5, 6]);
  });

  it("one that reaches max_tokens reports 'length', and a timeout before any token is a 504", async () => {
    const length = scripted([{ type: 'queued', id: 'r' }, { type: 'token', id: 'r', token: 5, logprob: NaN }, { type: 'done', id: 'r', finishReason: 'length', promptTokens: 2, completionTokens: 1 }]);
    assert.equal((await collectChoice(await startChoice(length, undefined, plan()), plan())).finishReason, 'length');
    const early = scripted([{ type: 'queued', id: 'r' }, { type: 'done', id: 'r', finishReason: 'timeout', promptTokens: 2, completionTokens: 0 }]);
    await assert.rejects(collectChoice(await startChoice(early, undefined, plan()), plan()), (err: unknown) => err instanceof ApiError && err.status === 504);
  });
});
