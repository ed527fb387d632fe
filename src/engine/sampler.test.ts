import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { logSoftmax, Sampler, topK } from './sampler.js';

const logits = Float32Array.from([0.5, 2.0, -1.0, 1.9, 0.0, -3.0]);

describe('Sampler', () => {
  it('temperature 0 is argmax, with the log-probability under the unmodified distribution', () => {
    const s = new Sampler({ temperature: 0, topP: 1, topK: 0 }).sample(logits, { logprobs: true, top: 2 });
    assert.equal(s.token, 1);
    assert.ok(Math.abs(s.logprob - logSoftmax(logits)[1]!) < 1e-12);
    assert.deepEqual(s.top!.map((t) => t.token), [1, 3]);
  });

  it('log-probabilities are computed only when asked for', () => {
    assert.ok(Number.isNaN(new Sampler({ temperature: 0, topP: 1, topK: 0 }).sample(logits).logprob));
  });

  it('the same seed gives the same draws; another seed gives others', () => {
    const draw = (seed: number) => {
      const s = new Sampler({ temperature: 1, topP: 1, topK: 0, seed });
      return Array.from({ length: 40 }, () => s.sample(logits).token);
    };
    assert.deepEqual(draw(3), draw(3));
    assert.notDeepEqual(draw(3), draw(4));
  });

  it('top_k 1 and a tiny top_p are greedy; top_k 2 never leaves the two best', () => {
    for (const params of [{ temperature: 1, topP: 1, topK: 1 }, { temperature: 1, topP: 0.01, topK: 0 }]) {
      const s = new Sampler({ ...params, seed: 1 });
      for (let i = 0; i < 20; i++) assert.equal(s.sample(logits).token, 1);
    }
    const s = new Sampler({ temperature: 1.5, topP: 1, topK: 2, seed: 9 });
    const seen = new Set(Array.from({ length: 200 }, () => s.sample(logits).token));
    assert.deepEqual([...seen].sort(), [1, 3]);
  });

  it('draws follow softmax(logits / T) (frequency check over 20,000 draws)', () => {
    const s = new Sampler({ temperature: 0.7, topP: 1, topK: 0, seed: 11 });
    const counts = new Float64Array(logits.length);
    const n = 20_000;
    for (let i = 0; i < n; i++) counts[s.sample(logits).token]!++;
    const expected = logSoftmax(logits.map((v) => v / 0.7)).map(Math.exp);
    counts.forEach((c, t) => assert.ok(Math.abs(c / n - expected[t]!) < 0.015, `token ${t}: ${c / n} vs ${expected[t]}`));
  });

  it('top_p keeps the smallest set of most likely tokens reaching the mass', () => {
    // probabilities at T=1: token 1 ≈ 0.44, token 3 ≈ 0.40, token 0 ≈ 0.10, ...
    const s = new Sampler({ temperature: 1, topP: 0.8, topK: 0, seed: 5 });
    const seen = new Set(Array.from({ length: 500 }, () => s.sample(logits).token));
    assert.deepEqual([...seen].sort(), [1, 3]);
  });

  it('a subnormal temperature samples the best token, with or without top_k and top_p', () => {
    // 1.5e-323 once made every weight NaN or 0: top_p kept no candidate and the token was undefined.
    for (const params of [{ topP: 1, topK: 0 }, { topP: 0.87, topK: 0 }, { topP: 1, topK: 18 }, { topP: 0.5, topK: 3 }]) {
      for (const temperature of [5e-324, 1.5e-323, 1e-300]) {
        const s = new Sampler({ ...params, temperature, seed: 2 });
        for (let i = 0; i < 5; i++) assert.equal(s.sample(logits).token, 1, JSON.stringify({ ...params, temperature }));
      }
    }
  });

  it('topK orders by value, ties by index', () => {
    assert.deepEqual(topK([1, 3, 3, 2], 3), [{ token: 1, logprob: 3 }, { token: 2, logprob: 3 }, { token: 3, logprob: 2 }]);
  });
});
