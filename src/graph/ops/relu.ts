import { registerOp } from './registry.js';

/** ONNX Cast codes of the float types a Relu may run in (the mask takes the input's type). */
const CAST_TO: Record<string, number> = { float32: 1, float16: 10, float64: 11, bfloat16: 16 };

/**
 * y = max(x, 0). dx = dy where y > 0, else 0 (PyTorch's rule: the gradient at x = 0 is 0). The
 * mask is 1 − (y == 0): y is 0 exactly where x ≤ 0, and Equal needs no rule of its own.
 */
export const relu = registerOp({
  op: 'Relu',
  infer: ([x]) => x!,
  grad: ({ g, output: y, dy }) => {
    const zero = g.apply('Cast', [g.apply('Equal', [y, g.scalar(0, y)])], { to: CAST_TO[g.type(y).dtype]! });
    return [g.apply('Mul', [dy, g.apply('Sub', [g.scalar(1, y), zero])])];
  },
});
