import { registerOp } from './registry.js';

/** y = sqrt(x). dx = dy / (2 y). */
export const sqrt = registerOp({
  op: 'Sqrt',
  infer: ([x]) => x!,
  grad: ({ g, output: y, dy }) => [g.apply('Div', [dy, g.apply('Mul', [y, g.scalar(2, y)])])],
});
