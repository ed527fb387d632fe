import { registerOp } from './registry.js';

/** y = x with axes permuted (perm defaults to reversed). dx = dy permuted back. */
export const transpose = registerOp({
  op: 'Transpose',
  infer: ([x], attrs) => {
    const rank = x!.shape.length;
    const perm = (attrs['perm'] as number[] | undefined) ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
    if (perm.length !== rank || [...perm].sort().some((p, i) => p !== i)) throw new Error(`perm [${perm.join(',')}] is not a permutation of rank ${rank}`);
    return { dtype: x!.dtype, shape: perm.map((p) => x!.shape[p]!) };
  },
  grad: ({ g, inputs: [x], dy, attrs }) => {
    const rank = g.shape(x!).length;
    const perm = (attrs['perm'] as number[] | undefined) ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
    const inverse = new Array<number>(rank);
    perm.forEach((p, i) => (inverse[p] = i));
    return [g.apply('Transpose', [dy], { perm: inverse })];
  },
});
