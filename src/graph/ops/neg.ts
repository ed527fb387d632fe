import { registerOp } from './registry.js';

/** y = -x. dx = -dy. */
export const neg = registerOp({
  op: 'Neg',
  infer: ([x]) => x!,
  grad: ({ g, dy }) => [g.apply('Neg', [dy])],
});
