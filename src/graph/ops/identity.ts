import { registerOp } from './registry.js';

/** y = x. dx = dy. (A detached Identity is skipped by autodiff; see TypedGraph.detach.) */
export const identity = registerOp({
  op: 'Identity',
  infer: ([x]) => x!,
  grad: ({ dy }) => [dy],
});
