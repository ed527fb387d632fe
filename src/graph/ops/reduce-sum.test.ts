import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('ReduceSum gradient, axes kept or dropped, and all axes', async () => {
  await checkGradient({ shapes: [[2, 3, 4]], build: (g, [x]) => g.apply('ReduceSum', [x!, g.ints([0, 2])], { keepdims: 0 }) });
  await checkGradient({ shapes: [[2, 3]], build: (g, [x]) => g.apply('ReduceSum', [x!, g.ints([-1])], { keepdims: 1 }) });
  await checkGradient({ shapes: [[2, 3]], build: (g, [x]) => g.apply('ReduceSum', [x!], { keepdims: 0 }) });
});
