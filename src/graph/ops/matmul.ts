import { registerOp } from './registry.js';
import { broadcastShapes, unbroadcast } from './shapes.js';
import type { TypedGraph } from '../typed-graph.js';

/** Swaps the last two axes. */
function transposeLast(g: TypedGraph, x: string): string {
  const rank = g.shape(x).length;
  const perm = Array.from({ length: rank }, (_, i) => i);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1]!, perm[rank - 2]!];
  return g.apply('Transpose', [x], { perm });
}

/**
 * y[..., m, n] = a[..., m, k] @ b[..., k, n], batch axes broadcast (rank >= 2 each).
 * da = dy @ b^T, db = a^T @ dy, each summed over the batch axes it was broadcast along.
 */
export const matmul = registerOp({
  op: 'MatMul',
  infer: ([a, b]) => {
    const [sa, sb] = [a!.shape, b!.shape];
    if (sa.length < 2 || sb.length < 2) throw new Error('MatMul operands must have rank >= 2');
    if (a!.dtype !== b!.dtype) throw new Error(`dtypes differ: ${a!.dtype}, ${b!.dtype}`);
    const [m, k] = sa.slice(-2) as [number, number];
    const [k2, n] = sb.slice(-2) as [number, number];
    if (k !== k2) throw new Error(`inner dims differ: ${k} vs ${k2}`);
    return { dtype: a!.dtype, shape: [...broadcastShapes(sa.slice(0, -2), sb.slice(0, -2)), m, n] };
  },
  grad: ({ g, inputs: [a, b], dy }) => [
    unbroadcast(g, g.apply('MatMul', [dy, transposeLast(g, b!)]), g.shape(a!)),
    unbroadcast(g, g.apply('MatMul', [transposeLast(g, a!), dy]), g.shape(b!)),
  ],
});
