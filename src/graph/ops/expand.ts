import { registerOp } from './registry.js';
import { broadcastShapes, unbroadcast } from './shapes.js';

/** y = x broadcast to a constant shape. dx = dy summed over the broadcast axes. */
export const expand = registerOp({
  op: 'Expand',
  infer: ([x], _attrs, [, shape]) => {
    if (!shape) throw new Error('Expand needs a constant shape');
    return { dtype: x!.dtype, shape: broadcastShapes(x!.shape, shape) };
  },
  grad: ({ g, inputs: [x], dy }) => [unbroadcast(g, dy, g.shape(x!)), undefined],
});
