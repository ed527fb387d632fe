import type { AttrValue, DType, Graph, GraphNode, Initializer, TensorData, ValueInfo } from '../ir.js';
import { ProtoWriter } from './protobuf.js';

/** ONNX TensorProto.DataType codes. */
const ONNX_DTYPE: Record<DType, number> = {
  float32: 1, float64: 11, uint8: 2, int32: 6, int64: 7, bool: 9, float16: 10, bfloat16: 16,
};

const ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_STRING = 3, ATTR_TENSOR = 4, ATTR_FLOATS = 6, ATTR_INTS = 7, ATTR_STRINGS = 8;

/** IR version 8 pairs with opset 17..18, which every op we emit exists in. */
const IR_VERSION = 8;

/**
 * Serialises a graph to ONNX ModelProto bytes. External tensors are written as references
 * (location/offset/length), so the model file stays small and weights are never copied.
 */
export function serializeModel(graph: Graph, producer = 'deltaserve'): Uint8Array {
  const w = new ProtoWriter();
  w.int(1, IR_VERSION);
  w.string(2, producer);
  w.message(7, (g) => writeGraph(g, graph));
  for (const [domain, version] of Object.entries(graph.opsets)) {
    w.message(8, (o) => o.string(1, domain).int(2, version));
  }
  return w.finish();
}

function writeGraph(w: ProtoWriter, graph: Graph): void {
  for (const node of graph.nodes) w.message(1, (n) => writeNode(n, node));
  w.string(2, graph.name);
  for (const init of graph.initializers) w.message(5, (t) => writeTensor(t, init));
  for (const input of graph.inputs) w.message(11, (v) => writeValueInfo(v, input));
  for (const output of graph.outputs) w.message(12, (v) => writeValueInfo(v, output));
}

function writeNode(w: ProtoWriter, node: GraphNode): void {
  for (const i of node.inputs) w.string(1, i);
  for (const o of node.outputs) w.string(2, o);
  w.string(3, node.name);
  w.string(4, node.op);
  for (const [name, value] of Object.entries(node.attrs)) w.message(5, (a) => writeAttribute(a, name, value));
  if (node.domain) w.string(7, node.domain);
}

function writeAttribute(w: ProtoWriter, name: string, value: AttrValue): void {
  w.string(1, name);
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: use {float: x} for non-integer ${value}`);
    w.int(3, value).int(20, ATTR_INT);
  } else if (typeof value === 'string') {
    w.string(4, value).int(20, ATTR_STRING);
  } else if (Array.isArray(value)) {
    if (value.every((v) => typeof v === 'number')) w.packedInts(8, value as number[]).int(20, ATTR_INTS);
    else {
      for (const s of value as string[]) w.string(9, s);
      w.int(20, ATTR_STRINGS);
    }
  } else if ('float' in value) {
    w.float(2, value.float).int(20, ATTR_FLOAT);
  } else if ('floats' in value) {
    w.packedFloats(7, value.floats).int(20, ATTR_FLOATS);
  } else {
    w.message(5, (t) => writeTensor(t, { name: '', data: value })).int(20, ATTR_TENSOR);
  }
}

function writeTensor(w: ProtoWriter, init: Initializer): void {
  const data: TensorData = init.data;
  w.packedInts(1, data.dims);
  w.int(2, ONNX_DTYPE[data.dtype]);
  if (init.name) w.string(8, init.name);
  if (data.kind === 'inline') {
    w.bytes(9, data.bytes);
  } else {
    const entry = (key: string, value: string) => w.message(13, (e) => e.string(1, key).string(2, value));
    entry('location', data.location);
    entry('offset', String(data.offset));
    entry('length', String(data.length));
    w.int(14, 1);
  }
}

function writeValueInfo(w: ProtoWriter, info: ValueInfo): void {
  w.string(1, info.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, ONNX_DTYPE[info.dtype]);
      tensor.message(2, (shape) => {
        for (const d of info.shape) shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
      });
    }),
  );
}
