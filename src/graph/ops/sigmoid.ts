import { registerOp } from './registry.js';

/** y = 1 / (1 + e^-x). dx = dy * y * (1 - y). */
export const sigmoid = registerOp({
  op: 'Sigmoid',
  infer: ([x]) => x!,
  grad: ({ g, output: y, dy }) => [g.apply('Mul', [dy, g.apply('Mul', [y, g.apply('Sub', [g.scalar(1, y), y])])])],
});
