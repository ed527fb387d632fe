import { test } from 'node:test';
import { checkGradient } from '../../../test/graph/gradient-check.js';

test('Gather gradient: rows of a table, repeated and negative indices add up', async () => {
  await checkGradient({ shapes: [[5, 3]], build: (g, [x]) => g.apply('Gather', [x!, g.constant('int64', [4], [1, 3, 1, -1])]) });
  await checkGradient({ shapes: [[4, 2]], build: (g, [x]) => g.apply('Gather', [x!, g.constant('int64', [2, 3], [0, 2, 2, 3, 0, 0])]) });
  await checkGradient({ shapes: [[6]], build: (g, [x]) => g.apply('Gather', [x!, g.constant('int64', [3], [5, 0, 5])]) });
});
