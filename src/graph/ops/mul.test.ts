import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Mul gradient, with broadcasting', async () => {
  await checkGradient({ shapes: [[2, 3], [2, 3]], build: (g, [a, b]) => g.apply('Mul', [a!, b!]) });
  await checkGradient({ shapes: [[2, 3, 4], [3, 1]], build: (g, [a, b]) => g.apply('Mul', [a!, b!]) });
});
