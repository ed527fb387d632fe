import { registerOp } from './registry.js';

/** y = x zero-padded by constant non-negative pads [begin..., end...]. dx = the middle slice of dy. */
export const pad = registerOp({
  op: 'Pad',
  infer: ([x], attrs, [, pads]) => {
    const rank = x!.shape.length;
    if (!pads || pads.length !== 2 * rank || pads.some((p) => p < 0)) throw new Error('Pad needs 2*rank constant non-negative pads');
    if ((attrs['mode'] ?? 'constant') !== 'constant') throw new Error('only constant padding');
    return { dtype: x!.dtype, shape: x!.shape.map((d, i) => d + pads[i]! + pads[i + rank]!) };
  },
  grad: ({ g, inputs: [x, pads], dy }) => {
    const shape = g.shape(x!);
    const begin = g.values(pads!).slice(0, shape.length);
    return [g.apply('Slice', [dy, g.ints(begin), g.ints(begin.map((b, i) => b + shape[i]!))]), undefined];
  },
});
