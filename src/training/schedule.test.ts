import assert from 'node:assert/strict';
import { test } from 'node:test';
import { learningRate } from './schedule.js';

const lr = (step: number, kind: 'constant' | 'linear' | 'cosine', warmup = 0) => learningRate({ base: 1, step, total: 10, warmup, kind });

test('warmup ramps from 0 as transformers does (step 0 trains at lr 0 when warming up)', () => {
  assert.deepEqual([0, 1, 2, 3].map((s) => lr(s, 'constant', 4)), [0, 0.25, 0.5, 0.75]);
  assert.equal(lr(4, 'constant', 4), 1);
});

test('constant, linear and cosine after warmup', () => {
  assert.deepEqual([0, 5, 9].map((s) => lr(s, 'constant')), [1, 1, 1]);
  assert.deepEqual([0, 5, 9].map((s) => lr(s, 'linear')), [1, 0.5, 1 - 0.9]);
  assert.ok(Math.abs(lr(5, 'cosine') - 0.5) < 1e-12);
  assert.ok(Math.abs(lr(2, 'linear', 2) - 1) < 1e-12);
  assert.ok(Math.abs(lr(6, 'linear', 2) - 0.5) < 1e-12);
  assert.equal(lr(10, 'cosine'), 0);
});
