import { registerOp } from './registry.js';
import { normalizeAxis } from './shapes.js';

/** Resolves Slice's constant starts/ends/axes (step 1) to per-axis [begin, end). */
export function sliceBounds(shape: number[], starts: number[], ends: number[], axes?: number[]): { begin: number[]; end: number[] } {
  const begin = shape.map(() => 0);
  const end = [...shape];
  (axes ?? starts.map((_, i) => i)).forEach((axis, i) => {
    const a = normalizeAxis(axis, shape.length);
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + shape[a]! : v, 0), shape[a]!);
    begin[a] = clamp(starts[i]!);
    end[a] = Math.max(clamp(ends[i]!), begin[a]!);
  });
  return { begin, end };
}

/** y = x[begin:end] per axis (constant starts/ends/axes, step 1). dx = dy zero-padded back to x's shape. */
export const slice = registerOp({
  op: 'Slice',
  infer: ([x], _attrs, [, starts, ends, axes, steps]) => {
    if (!starts || !ends) throw new Error('Slice needs constant starts and ends');
    if (steps && steps.some((s) => s !== 1)) throw new Error('only step 1 is supported');
    const { begin, end } = sliceBounds(x!.shape, starts, ends, axes);
    return { dtype: x!.dtype, shape: end.map((e, i) => e - begin[i]!) };
  },
  grad: ({ g, inputs: [x, starts, ends, axes], dy }) => {
    const shape = g.shape(x!);
    const value = (name: string | undefined) => (name ? g.values(name) : undefined);
    const { begin, end } = sliceBounds(shape, value(starts)!, value(ends)!, value(axes));
    const pads = [...begin, ...end.map((e, i) => shape[i]! - e)];
    return [g.apply('Pad', [dy, g.ints(pads)])];
  },
});
