import { registerOp } from './registry.js';
import { elementCount } from './shapes.js';

/** y = x viewed as a constant shape (0 copies a dim, one -1 is inferred). dx = dy viewed as x. */
export const reshape = registerOp({
  op: 'Reshape',
  infer: ([x], _attrs, [, target]) => {
    if (!target) throw new Error('Reshape needs a constant shape');
    const shape = target.map((d, i) => (d === 0 ? x!.shape[i]! : d));
    const known = elementCount(shape.filter((d) => d !== -1));
    const total = elementCount(x!.shape);
    const resolved = shape.map((d) => (d === -1 ? total / known : d));
    if (elementCount(resolved) !== total || !resolved.every(Number.isInteger)) throw new Error(`cannot view [${x!.shape.join(',')}] as [${target.join(',')}]`);
    return { dtype: x!.dtype, shape: resolved };
  },
  grad: ({ g, inputs: [x], dy }) => [g.apply('Reshape', [dy, g.ints(g.shape(x!))]), undefined],
});
