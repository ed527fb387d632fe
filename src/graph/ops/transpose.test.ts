import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Transpose gradient, explicit and default perm', async () => {
  await checkGradient({ shapes: [[2, 3, 4]], build: (g, [x]) => g.apply('Transpose', [x!], { perm: [1, 2, 0] }) });
  await checkGradient({ shapes: [[2, 3]], build: (g, [x]) => g.apply('Transpose', [x!]) });
});
