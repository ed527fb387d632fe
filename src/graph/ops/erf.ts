import { registerOp } from './registry.js';

/**
 * y = erf(x). dx = dy * 2/sqrt(pi) * exp(-x^2). For the exact GELU, x/2 (1 + erf(x/sqrt(2)))
 * (transformers' "gelu", the adapters library's default GELU), built from it.
 */
export const erf = registerOp({
  op: 'Erf',
  infer: ([x]) => x!,
  grad: ({ g, inputs: [x], dy }) => {
    const density = g.apply('Exp', [g.apply('Neg', [g.apply('Mul', [x!, x!])])]);
    return [g.apply('Mul', [dy, g.apply('Mul', [density, g.scalar(2 / Math.sqrt(Math.PI), x!)])])];
  },
});
