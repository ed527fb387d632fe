import { registerOp } from './registry.js';
import { elementwise, unbroadcast } from './shapes.js';

/** y = a - b (broadcast). da = dy, db = -dy. */
export const sub = registerOp({
  op: 'Sub',
  infer: elementwise,
  grad: ({ g, inputs: [a, b], dy }) => [unbroadcast(g, dy, g.shape(a!)), unbroadcast(g, g.apply('Neg', [dy]), g.shape(b!))],
});
