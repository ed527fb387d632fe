import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Concat gradient, three inputs along a middle axis', async () => {
  await checkGradient({ shapes: [[2, 1, 2], [2, 3, 2], [2, 2, 2]], build: (g, xs) => g.apply('Concat', xs, { axis: 1 }) });
});
