import { registerOp } from './registry.js';
import { unbroadcast } from './shapes.js';

/**
 * y = a @ op(b) + c with op(b) = b^T when transB (a is [M, K], never transposed; alpha = beta = 1).
 * It keeps frozen [out, in] weights untransposed. da = dy @ op(b)^T; db = dy^T @ a (transB) or
 * a^T @ dy; dc = dy summed to c's shape.
 */
export const gemm = registerOp({
  op: 'Gemm',
  infer: ([a, b, c], attrs) => {
    if (attrs['transA'] || (attrs['alpha'] ?? 1) !== 1 || (attrs['beta'] ?? 1) !== 1) throw new Error('only transA = 0, alpha = beta = 1');
    const [m, k] = a!.shape as [number, number];
    const [k2, n] = (attrs['transB'] ? [...b!.shape].reverse() : b!.shape) as [number, number];
    if (a!.shape.length !== 2 || b!.shape.length !== 2 || k !== k2) throw new Error('Gemm needs [M, K] and [K, N] (or [N, K] with transB)');
    if (c && c.shape.length > 2) throw new Error('Gemm bias must have rank <= 2');
    return { dtype: a!.dtype, shape: [m, n] };
  },
  grad: ({ g, inputs: [a, b, c], dy, attrs }) => {
    const transB = attrs['transB'] ? 1 : 0;
    const da = g.apply('Gemm', [dy, b!], { transB: transB ? 0 : 1 });
    const db = transB ? g.apply('Gemm', [g.apply('Transpose', [dy], { perm: [1, 0] }), a!]) : g.apply('Gemm', [g.apply('Transpose', [a!], { perm: [1, 0] }), dy]);
    return c ? [da, db, unbroadcast(g, dy, g.shape(c))] : [da, db];
  },
});
