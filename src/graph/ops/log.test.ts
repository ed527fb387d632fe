import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Log gradient', async () => {
  await checkGradient({ shapes: [[2, 3]], sample: (r) => 0.5 + r(), build: (g, [x]) => g.apply('Log', [x!]) });
});
