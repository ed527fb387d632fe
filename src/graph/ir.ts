/**
 * The graph IR: named values, nodes and initializers, built in TypeScript and serialised to ONNX.
 * A value is identified by its name; builders return names so graph code reads like dataflow.
 */
export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'bool' | 'uint8';

export type Dim = number | string;

export interface ValueInfo {
  name: string;
  dtype: DType;
  shape: Dim[];
}

export type AttrValue = number | string | number[] | string[] | { float: number } | { floats: number[] } | TensorData;

export interface GraphNode {
  op: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  name: string;
}

/** Initializer bytes held inline, or a slice of a file on disk (e.g. straight into a safetensors checkpoint). */
export type TensorData =
  | { kind: 'inline'; dtype: DType; dims: number[]; bytes: Uint8Array }
  | { kind: 'external'; dtype: DType; dims: number[]; location: string; offset: number; length: number };

export interface Initializer {
  name: string;
  data: TensorData;
}

export interface Graph {
  name: string;
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  nodes: GraphNode[];
  initializers: Initializer[];
  opsets: Record<string, number>;
}

/** Wraps a typed array as an inline initializer without copying its bytes. */
export function inlineTensor(dtype: DType, dims: number[], data: ArrayBufferView): TensorData {
  return { kind: 'inline', dtype, dims, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}
