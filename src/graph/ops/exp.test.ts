import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Exp gradient', async () => {
  await checkGradient({ shapes: [[2, 3]], build: (g, [x]) => g.apply('Exp', [x!]) });
});
