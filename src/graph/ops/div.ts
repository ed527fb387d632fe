import { registerOp } from './registry.js';
import { elementwise, unbroadcast } from './shapes.js';

/** y = a / b (broadcast). da = dy / b, db = -dy * a / b^2 = -dy * y / b. */
export const div = registerOp({
  op: 'Div',
  infer: elementwise,
  grad: ({ g, inputs: [a, b], output: y, dy }) => [
    unbroadcast(g, g.apply('Div', [dy, b!]), g.shape(a!)),
    unbroadcast(g, g.apply('Neg', [g.apply('Div', [g.apply('Mul', [dy, y]), b!])]), g.shape(b!)),
  ],
});
