import { registerOp } from './registry.js';

/** y = ln x. dx = dy / x. */
export const log = registerOp({
  op: 'Log',
  infer: ([x]) => x!,
  grad: ({ g, inputs: [x], dy }) => [g.apply('Div', [dy, x!])],
});
