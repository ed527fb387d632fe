import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Unsqueeze gradient', async () => {
  await checkGradient({ shapes: [[2, 3]], build: (g, [x]) => g.apply('Unsqueeze', [x!, g.ints([0, -1])]) });
});
