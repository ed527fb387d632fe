import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Sub gradient, with broadcasting', async () => {
  await checkGradient({ shapes: [[3, 2], [3, 2]], build: (g, [a, b]) => g.apply('Sub', [a!, b!]) });
  await checkGradient({ shapes: [[2], [3, 2]], build: (g, [a, b]) => g.apply('Sub', [a!, b!]) });
});
