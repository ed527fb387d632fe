import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('MatMul gradient, 2-D, batched and with broadcast batch axes', async () => {
  await checkGradient({ shapes: [[2, 3], [3, 4]], build: (g, [a, b]) => g.apply('MatMul', [a!, b!]) });
  await checkGradient({ shapes: [[2, 2, 3], [2, 3, 2]], build: (g, [a, b]) => g.apply('MatMul', [a!, b!]) });
  await checkGradient({ shapes: [[2, 1, 2, 3], [3, 3, 2]], build: (g, [a, b]) => g.apply('MatMul', [a!, b!]) });
});
