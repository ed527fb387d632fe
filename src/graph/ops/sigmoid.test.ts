import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Sigmoid gradient', async () => {
  await checkGradient({ shapes: [[2, 3]], sample: (r) => 6 * r() - 3, build: (g, [x]) => g.apply('Sigmoid', [x!]) });
});
