import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Softmax gradient, last and middle axis', async () => {
  await checkGradient({ shapes: [[2, 5]], build: (g, [x]) => g.apply('Softmax', [x!], { axis: -1 }) });
  await checkGradient({ shapes: [[2, 3, 2]], build: (g, [x]) => g.apply('Softmax', [x!], { axis: 1 }) });
});
