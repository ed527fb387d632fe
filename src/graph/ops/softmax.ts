import { registerOp } from './registry.js';
import { normalizeAxis } from './shapes.js';

/** y = softmax(x) along `axis` (default -1). dx = y * (dy - sum(dy * y, axis)). */
export const softmax = registerOp({
  op: 'Softmax',
  infer: ([x], attrs) => {
    normalizeAxis((attrs['axis'] as number | undefined) ?? -1, x!.shape.length);
    return x!;
  },
  grad: ({ g, output: y, dy, attrs }) => {
    const axis = normalizeAxis((attrs['axis'] as number | undefined) ?? -1, g.shape(y).length);
    const dot = g.apply('ReduceSum', [g.apply('Mul', [dy, y]), g.ints([axis])], { keepdims: 1 });
    return [g.apply('Mul', [y, g.apply('Sub', [dy, dot])])];
  },
});
