import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Expand gradient, new and unit axes', async () => {
  await checkGradient({ shapes: [[2, 1, 3]], build: (g, [x]) => g.apply('Expand', [x!, g.ints([4, 2, 2, 3])]) });
});
