import { registerOp } from './registry.js';

/** y = x with unit axes inserted at constant `axes`. dx = dy viewed as x. */
export const unsqueeze = registerOp({
  op: 'Unsqueeze',
  infer: ([x], _attrs, [, axes]) => {
    if (!axes) throw new Error('Unsqueeze needs constant axes');
    const rank = x!.shape.length + axes.length;
    const at = new Set(axes.map((a) => (a < 0 ? a + rank : a)));
    const rest = [...x!.shape];
    return { dtype: x!.dtype, shape: Array.from({ length: rank }, (_, i) => (at.has(i) ? 1 : rest.shift()!)) };
  },
  grad: ({ g, inputs: [x], dy }) => [g.apply('Reshape', [dy, g.ints(g.shape(x!))]), undefined],
});
