import { registerOp } from './registry.js';
import { normalizeAxis } from './shapes.js';

/** y = inputs joined along `axis`. Each input's gradient is its slice of dy. */
export const concat = registerOp({
  op: 'Concat',
  infer: (inputs, attrs) => {
    const first = inputs[0]!;
    const axis = normalizeAxis(attrs['axis'] as number, first.shape.length);
    for (const t of inputs) {
      if (t.dtype !== first.dtype || t.shape.length !== first.shape.length || t.shape.some((d, i) => i !== axis && d !== first.shape[i])) {
        throw new Error(`inputs do not agree outside axis ${axis}`);
      }
    }
    return { dtype: first.dtype, shape: first.shape.map((d, i) => (i === axis ? inputs.reduce((n, t) => n + t.shape[i]!, 0) : d)) };
  },
  grad: ({ g, inputs, dy, attrs }) => {
    const axis = normalizeAxis(attrs['axis'] as number, g.shape(dy).length);
    let offset = 0;
    return inputs.map((x) => {
      const size = g.shape(x)[axis]!;
      offset += size;
      return g.apply('Slice', [dy, g.ints([offset - size]), g.ints([offset]), g.ints([axis])]);
    });
  },
});
