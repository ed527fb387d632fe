import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('ReduceMax gradient (distinct values, so the maximum is unique)', async () => {
  await checkGradient({ shapes: [[3, 4]], build: (g, [x]) => g.apply('ReduceMax', [x!], { axes: [1], keepdims: 1 }) });
  await checkGradient({ shapes: [[3, 4]], build: (g, [x]) => g.apply('ReduceMax', [x!], { axes: [0], keepdims: 0 }) });
});
