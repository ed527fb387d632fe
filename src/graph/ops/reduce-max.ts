import { registerOp } from './registry.js';
import { expandReduced, reducedShape, reductionAxes } from './shapes.js';

/**
 * y = max of x over the `axes` attribute (opset 17). dx = dy at the maxima, split evenly between
 * ties (as PyTorch's amax does), zero elsewhere.
 */
export const reduceMax = registerOp({
  op: 'ReduceMax',
  infer: ([x], attrs) => {
    const reduced = reductionAxes(x!.shape.length, attrs['axes'] as number[] | undefined);
    return { dtype: x!.dtype, shape: reducedShape(x!.shape, reduced, (attrs['keepdims'] ?? 1) === 1) };
  },
  grad: ({ g, inputs: [x], output: y, dy, attrs }) => {
    const shape = g.shape(x!);
    const axes = reductionAxes(shape.length, attrs['axes'] as number[] | undefined);
    const atMax = g.apply('Cast', [g.apply('Equal', [x!, expandReduced(g, y, shape, axes)])], { to: g.type(x!).dtype === 'float64' ? 11 : 1 });
    const ties = g.apply('ReduceSum', [atMax, g.ints(axes)], { keepdims: 1 });
    return [g.apply('Mul', [atMax, expandReduced(g, g.apply('Div', [g.apply('Reshape', [dy, g.ints(g.shape(ties))]), ties]), shape, axes)])];
  },
});
