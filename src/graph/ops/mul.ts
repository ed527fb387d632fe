import { registerOp } from './registry.js';
import { elementwise, unbroadcast } from './shapes.js';

/** y = a * b (broadcast). da = dy * b, db = dy * a. */
export const mul = registerOp({
  op: 'Mul',
  infer: elementwise,
  grad: ({ g, inputs: [a, b], dy }) => [
    unbroadcast(g, g.apply('Mul', [dy, b!]), g.shape(a!)),
    unbroadcast(g, g.apply('Mul', [dy, a!]), g.shape(b!)),
  ],
});
