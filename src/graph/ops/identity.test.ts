import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Identity gradient, and a detached value stops it', async () => {
  await checkGradient({ shapes: [[3]], build: (g, [x]) => g.apply('Identity', [x!]) });
  // d/dx (x * stop(x)) = stop(x): the detached factor contributes nothing.
  await checkGradient({ shapes: [[3]], build: (g, [x]) => g.apply('Add', [g.apply('Mul', [x!, x!]), g.apply('Neg', [g.apply('Mul', [x!, g.detach(x!)])])]) }).then(
    () => assert.fail('a detached factor must change the gradient'),
    (err: Error) => assert.match(err.message, /finite difference/),
  );
});
