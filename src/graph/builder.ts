import type { AttrValue, DType, Dim, Graph, GraphNode, TensorData } from './ir.js';
import { inlineTensor } from './ir.js';

export type ConstantDType = 'int64' | 'int32' | 'float32' | 'float64';

export interface NodeOptions {
  domain?: string;
  /** Number of outputs (default 1), or explicit output names. */
  outputs?: number | string[];
  name?: string;
}

/**
 * Accumulates a graph. Every value gets a unique name; `op()` returns the output names.
 *
 * @example
 * const b = new GraphBuilder('tiny');
 * const x = b.input('x', 'float32', ['n', 4]);
 * b.output(b.op1('Relu', [x]), 'y', 'float32', ['n', 4]);
 */
export class GraphBuilder {
  private readonly graph: Graph;
  private readonly used = new Set<string>();
  private counter = 0;
  private readonly constants = new Map<string, string>();

  constructor(name: string, opsets: Record<string, number> = { '': 17, 'com.microsoft': 1 }) {
    this.graph = { name, inputs: [], outputs: [], nodes: [], initializers: [], opsets };
  }

  /** A fresh value name with the given stem. */
  fresh(stem: string): string {
    let name = stem;
    while (this.used.has(name)) name = `${stem}_${++this.counter}`;
    this.used.add(name);
    return name;
  }

  input(name: string, dtype: DType, shape: Dim[]): string {
    if (this.used.has(name)) throw new Error(`graph value ${name} defined twice`);
    this.used.add(name);
    this.graph.inputs.push({ name, dtype, shape });
    return name;
  }

  /** Marks `value` as a graph output, renaming it with an Identity when its name differs. */
  output(value: string, name: string, dtype: DType, shape: Dim[]): string {
    const out = value === name ? value : this.op('Identity', [value], {}, { outputs: [name] })[0]!;
    this.graph.outputs.push({ name: out, dtype, shape });
    return out;
  }

  initializer(name: string, data: TensorData): string {
    const unique = this.fresh(name);
    this.graph.initializers.push({ name: unique, data });
    return unique;
  }

  /** A small constant initializer, deduplicated by value. */
  constant(dtype: ConstantDType, dims: number[], values: number[]): string {
    const key = `${dtype}:${dims.join(',')}:${values.join(',')}`;
    const known = this.constants.get(key);
    if (known) return known;
    const array =
      dtype === 'int64'
        ? BigInt64Array.from(values.map(BigInt))
        : dtype === 'int32'
          ? Int32Array.from(values)
          : dtype === 'float64'
            ? Float64Array.from(values)
            : Float32Array.from(values);
    const name = this.initializer('const', inlineTensor(dtype, dims, array));
    this.constants.set(key, name);
    return name;
  }

  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, options: NodeOptions = {}): string[] {
    const spec = options.outputs ?? 1;
    const outputs = typeof spec === 'number' ? Array.from({ length: spec }, () => this.fresh(op.toLowerCase())) : spec.map((n) => (n === '' ? '' : this.claim(n)));
    const node: GraphNode = { op, domain: options.domain ?? '', inputs, outputs, attrs, name: options.name ?? this.fresh(`n_${op}`) };
    this.graph.nodes.push(node);
    return outputs;
  }

  /** Single-output `op`. */
  op1(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, options: NodeOptions = {}): string {
    return this.op(op, inputs, attrs, options)[0]!;
  }

  private claim(name: string): string {
    if (this.used.has(name)) throw new Error(`graph value ${name} defined twice`);
    this.used.add(name);
    return name;
  }

  build(): Graph {
    return this.graph;
  }
}
