import { registerOp } from './registry.js';
import { elementCount, expandReduced, reducedShape, reductionAxes } from './shapes.js';

/** y = mean of x over the `axes` attribute (opset 17). dx = dy broadcast back, divided by the count. */
export const reduceMean = registerOp({
  op: 'ReduceMean',
  infer: ([x], attrs) => {
    const reduced = reductionAxes(x!.shape.length, attrs['axes'] as number[] | undefined);
    return { dtype: x!.dtype, shape: reducedShape(x!.shape, reduced, (attrs['keepdims'] ?? 1) === 1) };
  },
  grad: ({ g, inputs: [x], dy, attrs }) => {
    const shape = g.shape(x!);
    const axes = reductionAxes(shape.length, attrs['axes'] as number[] | undefined);
    const count = elementCount(axes.map((a) => shape[a]!));
    return [g.apply('Mul', [expandReduced(g, dy, shape, axes), g.scalar(1 / count, dy)])];
  },
});
