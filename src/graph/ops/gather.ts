import { registerOp } from './registry.js';
import { normalizeAxis } from './shapes.js';

/**
 * y = data gathered at integer `indices` along `axis` (an embedding lookup: rows of a table).
 * Gradient (axis 0, the only one the training step differentiates): ddata[i] = sum of dy over the
 * positions whose index is i (repeats add up), a ScatterND with reduction 'add' of dy into zeros;
 * none for the indices.
 */
export const gather = registerOp({
  op: 'Gather',
  infer: ([data, indices], attrs) => {
    const axis = normalizeAxis((attrs['axis'] as number | undefined) ?? 0, data!.shape.length);
    return { dtype: data!.dtype, shape: [...data!.shape.slice(0, axis), ...indices!.shape, ...data!.shape.slice(axis + 1)] };
  },
  grad: ({ g, inputs: [data, indices], dy, attrs }) => {
    const shape = g.shape(data!);
    if (normalizeAxis((attrs['axis'] as number | undefined) ?? 0, shape.length) !== 0) throw new Error('Gather is differentiated along axis 0 only');
    const n = g.shape(indices!).reduce((a, b) => a * b, 1);
    const zeros = g.apply('Expand', [g.scalar(0, dy), g.ints(shape)]); // [V, ...]
    const at = g.apply('Reshape', [indices!, g.ints([n, 1])]); // [n, 1]
    const updates = g.apply('Reshape', [dy, g.ints([n, ...shape.slice(1)])]); // [n, ...]
    return [g.apply('ScatterND', [zeros, at, updates], { reduction: 'add' }), undefined];
  },
});
