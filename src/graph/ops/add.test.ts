import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Add gradient, same shapes and broadcast both ways', async () => {
  await checkGradient({ shapes: [[2, 3], [2, 3]], build: (g, [a, b]) => g.apply('Add', [a!, b!]) });
  await checkGradient({ shapes: [[2, 1, 3], [4, 1]], build: (g, [a, b]) => g.apply('Add', [a!, b!]) });
});
