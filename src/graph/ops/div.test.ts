import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Div gradient, with broadcasting', async () => {
  const positive = (r: () => number) => 0.5 + r();
  await checkGradient({ shapes: [[2, 3], [2, 3]], sample: positive, build: (g, [a, b]) => g.apply('Div', [a!, b!]) });
  await checkGradient({ shapes: [[2, 3], [1]], sample: positive, build: (g, [a, b]) => g.apply('Div', [a!, b!]) });
});
