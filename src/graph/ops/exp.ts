import { registerOp } from './registry.js';

/** y = e^x. dx = dy * y. */
export const exp = registerOp({
  op: 'Exp',
  infer: ([x]) => x!,
  grad: ({ g, output: y, dy }) => [g.apply('Mul', [dy, y])],
});
