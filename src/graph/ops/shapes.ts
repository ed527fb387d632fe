import type { TypedGraph } from '../typed-graph.js';
import type { TensorType } from './registry.js';

/** Numpy broadcasting of two shapes; throws when a pair of dims is incompatible. */
export function broadcastShapes(a: number[], b: number[]): number[] {
  const rank = Math.max(a.length, b.length);
  return Array.from({ length: rank }, (_, i) => {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`cannot broadcast [${a.join(',')}] with [${b.join(',')}]`);
    return da === 1 ? db : da;
  });
}

/** Output type of an elementwise op over broadcast inputs of one dtype. */
export function elementwise(inputs: TensorType[]): TensorType {
  const dtype = inputs[0]!.dtype;
  if (inputs.some((t) => t.dtype !== dtype)) throw new Error(`dtypes differ: ${inputs.map((t) => t.dtype).join(', ')}`);
  return { dtype, shape: inputs.map((t) => t.shape).reduce(broadcastShapes) };
}

export function normalizeAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`axis ${axis} out of range for rank ${rank}`);
  return a;
}

export function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export const elementCount = (shape: number[]): number => shape.reduce((n, d) => n * d, 1);

/**
 * The one place broadcasting is undone: sums `grad` over the axes along which a value of shape
 * `target` was broadcast, so the gradient has the value's own shape.
 */
export function unbroadcast(g: TypedGraph, grad: string, target: number[]): string {
  const shape = g.shape(grad);
  if (sameShape(shape, target)) return grad;
  const lead = shape.length - target.length;
  const axes = shape.map((d, i) => i).filter((i) => i < lead || (target[i - lead] === 1 && shape[i] !== 1));
  const summed = axes.length ? g.apply('ReduceSum', [grad, g.ints(axes)], { keepdims: 1 }) : grad;
  return g.apply('Reshape', [summed, g.ints(target)]);
}

/** `dy` of a reduction with keepdims (or not) brought back to the input's shape. */
export function expandReduced(g: TypedGraph, dy: string, inputShape: number[], axes: number[]): string {
  const kept = inputShape.map((d, i) => (axes.includes(i) ? 1 : d));
  return g.apply('Expand', [g.apply('Reshape', [dy, g.ints(kept)]), g.ints(inputShape)]);
}

/** The reduced axes of a Reduce* node, normalised; all axes when none are given. */
export function reductionAxes(rank: number, axes: number[] | undefined): number[] {
  if (!axes || axes.length === 0) return Array.from({ length: rank }, (_, i) => i);
  return [...new Set(axes.map((a) => normalizeAxis(a, rank)))].sort((x, y) => x - y);
}

export function reducedShape(shape: number[], axes: number[], keepdims: boolean): number[] {
  return keepdims ? shape.map((d, i) => (axes.includes(i) ? 1 : d)) : shape.filter((_, i) => !axes.includes(i));
}
