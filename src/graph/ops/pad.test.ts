import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Pad gradient', async () => {
  await checkGradient({ shapes: [[2, 3]], build: (g, [x]) => g.apply('Pad', [x!, g.ints([1, 0, 0, 2])]) });
});
