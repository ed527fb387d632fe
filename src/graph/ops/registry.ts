import type { AttrValue, DType } from '../ir.js';
import type { TypedGraph } from '../typed-graph.js';

/** A value's static type: training graphs are built for fixed shapes, so every dim is a number. */
export interface TensorType {
  dtype: DType;
  shape: number[];
}

/** What a gradient rule sees: the forward node's inputs and output, and the output's gradient. */
export interface GradContext {
  g: TypedGraph;
  inputs: string[];
  output: string;
  dy: string;
  attrs: Record<string, AttrValue>;
}

/**
 * One ONNX op as the typed graph knows it: output type inference and, for differentiable ops,
 * the gradient rule. A rule returns one gradient per input (undefined where the input is not
 * differentiable, e.g. a shape or an index) and builds them with graph ops only.
 */
export interface OpDef {
  op: string;
  domain?: string;
  /** `constants[i]` holds input i's values when it is a constant (shapes, axes, starts). */
  infer(inputs: TensorType[], attrs: Record<string, AttrValue>, constants: (number[] | undefined)[]): TensorType;
  grad?(ctx: GradContext): (string | undefined)[];
}

const ops = new Map<string, OpDef>();

/** Op modules register on import; a name registered twice is a programming error. */
export function registerOp(def: OpDef): OpDef {
  if (ops.has(def.op)) throw new Error(`op ${def.op} registered twice`);
  ops.set(def.op, def);
  return def;
}

export function getOp(op: string): OpDef {
  const def = ops.get(op);
  if (!def) throw new Error(`op ${op} is not registered with the typed graph`);
  return def;
}

export function registeredOps(): OpDef[] {
  return [...ops.values()];
}
