import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Reshape gradient, with -1 and 0', async () => {
  await checkGradient({ shapes: [[2, 6]], build: (g, [x]) => g.apply('Reshape', [x!, g.ints([0, 3, -1])]) });
});
