import { registerOp } from './registry.js';

/** y = tanh(x). dx = dy * (1 - y^2). */
export const tanh = registerOp({
  op: 'Tanh',
  infer: ([x]) => x!,
  grad: ({ g, output: y, dy }) => [g.apply('Mul', [dy, g.apply('Sub', [g.scalar(1, y), g.apply('Mul', [y, y])])])],
});
