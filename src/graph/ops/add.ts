import { registerOp } from './registry.js';
import { elementwise, unbroadcast } from './shapes.js';

/** y = a + b (broadcast). da = dy, db = dy, each summed back to its own shape. */
export const add = registerOp({
  op: 'Add',
  infer: elementwise,
  grad: ({ g, inputs: [a, b], dy }) => [unbroadcast(g, dy, g.shape(a!)), unbroadcast(g, dy, g.shape(b!))],
});
