import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Slice gradient, negative starts and explicit axes', async () => {
  await checkGradient({ shapes: [[3, 4]], build: (g, [x]) => g.apply('Slice', [x!, g.ints([-2]), g.ints([100]), g.ints([-1])]) });
  await checkGradient({ shapes: [[3, 4]], build: (g, [x]) => g.apply('Slice', [x!, g.ints([1, 0]), g.ints([3, 2])]) });
});
