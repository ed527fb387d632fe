import { registerOp } from './registry.js';
import { expandReduced, reducedShape, reductionAxes } from './shapes.js';

/** y = sum of x over constant `axes` input (all when absent). dx = dy broadcast back over them. */
export const reduceSum = registerOp({
  op: 'ReduceSum',
  infer: ([x], attrs, [, axes]) => {
    const reduced = reductionAxes(x!.shape.length, axes);
    return { dtype: x!.dtype, shape: reducedShape(x!.shape, reduced, (attrs['keepdims'] ?? 1) === 1) };
  },
  grad: ({ g, inputs: [x, axes], dy }) => {
    const shape = g.shape(x!);
    return [expandReduced(g, dy, shape, reductionAxes(shape.length, axes ? g.values(axes) : undefined)), undefined];
  },
});
