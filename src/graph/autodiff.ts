import { getOp } from './ops/registry.js';
import type { TypedGraph } from './typed-graph.js';

/**
 * Reverse-mode differentiation over a typed graph: appends the gradient of the scalar `loss`
 * with respect to each of `wrt` to the same graph and returns their names. Only nodes on a path
 * from `wrt` to `loss` are differentiated, so frozen weights, indices and masks cost nothing.
 *
 * @example
 * const grads = gradients(g, loss, [loraA, loraB]);
 * g.output(grads.get(loraA)!, 'grad.lora_A');
 */
export function gradients(g: TypedGraph, loss: string, wrt: string[]): Map<string, string> {
  if (g.shape(loss).some((d) => d !== 1)) throw new Error(`loss must be a scalar, got [${g.shape(loss).join(',')}]`);
  const forward = [...g.nodes];
  const reached = reachableFrom(forward, new Set(wrt), g.stopped);
  const pending = new Map<string, string[]>([[loss, [g.apply('Reshape', [g.scalar(1, loss), g.ints(g.shape(loss))])]]]);
  for (let i = forward.length - 1; i >= 0; i--) {
    const node = forward[i]!;
    const dys = pending.get(node.output);
    if (!dys || !reached.has(node.output)) continue;
    const rule = getOp(node.op).grad;
    if (!rule) throw new Error(`op ${node.op} has no gradient rule, but ${node.output} lies between the parameters and the loss`);
    const dxs = rule({ g, inputs: node.inputs, output: node.output, dy: sum(g, dys), attrs: node.attrs });
    node.inputs.forEach((input, k) => {
      if (!reached.has(input)) return;
      const dx = dxs[k];
      if (!dx) throw new Error(`op ${node.op} input ${k} (${input}) is not differentiable, but lies between the parameters and the loss`);
      pending.set(input, [...(pending.get(input) ?? []), dx]);
    });
  }
  return new Map(
    wrt.map((param) => {
      const dys = pending.get(param);
      if (!dys) throw new Error(`the loss does not depend on ${param}`);
      return [param, sum(g, dys)];
    }),
  );
}

/** Values computed from `sources` (through non-stopped values). */
function reachableFrom(nodes: TypedGraph['nodes'], sources: Set<string>, stopped: Set<string>): Set<string> {
  const reached = new Set(sources);
  for (const node of nodes) {
    if (!stopped.has(node.output) && node.inputs.some((i) => reached.has(i))) reached.add(node.output);
  }
  return reached;
}

function sum(g: TypedGraph, values: string[]): string {
  return values.reduce((acc, v) => g.apply('Add', [acc, v]));
}
