import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Tanh gradient', async () => {
  await checkGradient({ shapes: [[2, 3]], sample: (r) => 4 * r() - 2, build: (g, [x]) => g.apply('Tanh', [x!]) });
});
