import { GraphBuilder, type ConstantDType } from './builder.js';
import type { AttrValue, DType, Graph, TensorData } from './ir.js';
import { getOp, type TensorType } from './ops/registry.js';
import './ops/index.js';

/** A node of the typed graph, as autodiff walks it. */
export interface TypedNode {
  op: string;
  inputs: string[];
  output: string;
  attrs: Record<string, AttrValue>;
}

/**
 * A graph whose every value has a static dtype and shape, built through registered ops so that
 * shapes are checked as the graph is written and autodiff can find each op's gradient rule.
 *
 * @example
 * const g = new TypedGraph('f');
 * const x = g.input('x', 'float64', [2, 3]);
 * const y = g.apply('Sigmoid', [x]); // g.type(y) = { dtype: 'float64', shape: [2, 3] }
 */
export class TypedGraph {
  readonly b: GraphBuilder;
  readonly nodes: TypedNode[] = [];
  private readonly types = new Map<string, TensorType>();
  private readonly constants = new Map<string, number[]>();
  /** Values autodiff must not differentiate through (see `detach`). */
  readonly stopped = new Set<string>();

  constructor(name: string) {
    this.b = new GraphBuilder(name);
  }

  input(name: string, dtype: DType, shape: number[]): string {
    return this.typed(this.b.input(name, dtype, shape), { dtype, shape });
  }

  initializer(name: string, data: TensorData): string {
    return this.typed(this.b.initializer(name, data), { dtype: data.dtype, shape: data.dims });
  }

  constant(dtype: ConstantDType, shape: number[], values: number[]): string {
    const name = this.typed(this.b.constant(dtype, shape, values), { dtype, shape });
    this.constants.set(name, values);
    return name;
  }

  /** A scalar of `like`'s dtype (float constants follow the graph's precision). */
  scalar(value: number, like: string): string {
    return this.constant(this.type(like).dtype as ConstantDType, [], [value]);
  }

  /** An int64 vector, e.g. a shape or an axes list. */
  ints(values: number[]): string {
    return this.constant('int64', [values.length], values);
  }

  apply(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    const def = getOp(op);
    let type: TensorType;
    try {
      type = def.infer(inputs.map((i) => this.type(i)), attrs, inputs.map((i) => this.constants.get(i)));
    } catch (err) {
      const shapes = inputs.map((i) => `[${this.type(i).shape.join(',')}]`).join(' ');
      throw new Error(`${op} on ${shapes}: ${(err as Error).message}`, { cause: err });
    }
    const output = this.b.op1(op, inputs, attrs, def.domain ? { domain: def.domain } : {});
    this.nodes.push({ op, inputs, output, attrs });
    return this.typed(output, type);
  }

  /** The same value, but autodiff treats it as a constant (e.g. the max subtracted in a logsumexp). */
  detach(x: string): string {
    const y = this.apply('Identity', [x]);
    this.stopped.add(y);
    return y;
  }

  output(value: string, name: string): string {
    const type = this.type(value);
    return this.typed(this.b.output(value, name, type.dtype, type.shape), type);
  }

  type(value: string): TensorType {
    const type = this.types.get(value);
    if (!type) throw new Error(`typed graph: unknown value ${value}`);
    return type;
  }

  /** A constant's values (shapes, axes, pads), for rules that need them at build time. */
  values(value: string): number[] {
    const values = this.constants.get(value);
    if (!values) throw new Error(`typed graph: ${value} is not a constant`);
    return values;
  }

  shape(value: string): number[] {
    return this.type(value).shape;
  }

  build(): Graph {
    return this.b.build();
  }

  private typed(name: string, type: TensorType): string {
    this.types.set(name, type);
    return name;
  }
}
