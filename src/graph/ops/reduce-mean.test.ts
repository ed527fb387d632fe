import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('ReduceMean gradient', async () => {
  await checkGradient({ shapes: [[2, 3, 4]], build: (g, [x]) => g.apply('ReduceMean', [x!], { axes: [-1], keepdims: 1 }) });
  await checkGradient({ shapes: [[2, 3, 4]], build: (g, [x]) => g.apply('ReduceMean', [x!], { axes: [0, 1], keepdims: 0 }) });
});
