import { registerOp } from './registry.js';

/**
 * y = max(x, 0). dx = dy where y > 0, else 0 — PyTorch's threshold_backward on the result, so the
 * kink at 0 gets gradient 0 as in torch.nn.ReLU. The mask is 1 − [y = 0] (y is never negative),
 * from ops that need no gradient of their own.
 */
export const relu = registerOp({
  op: 'Relu',
  infer: ([x]) => x!,
  grad: ({ g, output: y, dy }) => {
    const zero = g.apply('Cast', [g.apply('Equal', [y, g.scalar(0, y)])], { to: g.type(y).dtype === 'float64' ? 11 : 1 }); // 1 where y = 0
    return [g.apply('Mul', [dy, g.apply('Sub', [g.scalar(1, y), zero])])];
  },
});
