import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Relu gradient', async () => {
  // Values at least 0.05 from the kink, where central differences with h = 1e-6 are exact.
  await checkGradient({ shapes: [[3, 4]], sample: (r) => (r() < 0.5 ? -1 : 1) * (0.05 + 2 * r()), build: (g, [x]) => g.apply('Relu', [x!]) });
});
