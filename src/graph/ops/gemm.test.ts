import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Gemm gradient, with and without transB and bias', async () => {
  await checkGradient({ shapes: [[2, 3], [3, 4]], build: (g, [a, b]) => g.apply('Gemm', [a!, b!]) });
  await checkGradient({ shapes: [[2, 3], [4, 3], [4]], build: (g, [a, b, c]) => g.apply('Gemm', [a!, b!, c!], { transB: 1 }) });
  await checkGradient({ shapes: [[2, 3], [3, 4], [2, 1]], build: (g, [a, b, c]) => g.apply('Gemm', [a!, b!, c!]) });
});
