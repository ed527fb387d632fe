import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Relu gradient (inputs kept off the kink at 0, where a central difference is undefined)', async () => {
  await checkGradient({ shapes: [[3, 4]], sample: (r) => { const v = 4 * r() - 2; return v + 0.2 * Math.sign(v); }, build: (g, [x]) => g.apply('Relu', [x!]) });
});
